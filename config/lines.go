package config

import (
	"regexp"
	"strconv"
	"strings"
)

// keyLines maps a key path as messages print it ("node[2].name", "vip[1]",
// "cluster") to the line it is written on. BurntSushi/toml keeps positions
// only for its own errors, so semantic errors find their line here. The scan
// understands what hapair's files use: tables, arrays of tables, plain and
// dotted keys, multi-line arrays and strings.
type keyLines struct {
	lines map[string]int
	// plain lists every key path with its array indices stripped, as
	// toml.MetaData.Undecoded reports it, next to the indexed path.
	plain map[string][]string
}

var (
	reArrayTable = regexp.MustCompile(`^\s*\[\[\s*([^\]]+?)\s*\]\]`)
	reTable      = regexp.MustCompile(`^\s*\[\s*([^\]]+?)\s*\]`)
	reKey        = regexp.MustCompile(`^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=`)
)

func scanLines(src string) keyLines {
	kl := keyLines{lines: map[string]int{}, plain: map[string][]string{}}
	counts := map[string]int{}
	prefix, plainPrefix := "", ""
	inMultiline := ""
	for i, line := range strings.Split(src, "\n") {
		n := i + 1
		if inMultiline != "" {
			if strings.Count(line, inMultiline)%2 == 1 {
				inMultiline = ""
			}
			continue
		}
		if m := reArrayTable.FindStringSubmatch(line); m != nil {
			name := normKey(m[1])
			counts[name]++
			prefix = name + "[" + strconv.Itoa(counts[name]) + "]"
			plainPrefix = name
			if counts[name] == 1 {
				kl.lines[name] = n
			}
			kl.add(prefix, plainPrefix, n)
			continue
		}
		if m := reTable.FindStringSubmatch(line); m != nil {
			prefix = normKey(m[1])
			plainPrefix = prefix
			kl.add(prefix, plainPrefix, n)
			continue
		}
		m := reKey.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := normKey(m[1])
		kl.add(join(prefix, key), join(plainPrefix, key), n)
		rest := line[len(m[0]):]
		for _, q := range []string{`"""`, `'''`} {
			if strings.Count(rest, q)%2 == 1 {
				inMultiline = q
			}
		}
	}
	return kl
}

func (kl keyLines) add(path, plain string, n int) {
	if _, ok := kl.lines[path]; !ok {
		kl.lines[path] = n
		kl.plain[plain] = append(kl.plain[plain], path)
	}
}

// at is the path, as messages print it (indices included), of the key
// written on line whose path without indices is plain: decoder errors give
// a line and a plain key. It falls back to plain.
func (kl keyLines) at(line int, plain string) string {
	best, bestLine := plain, 0
	for _, p := range kl.plain[plain] {
		if n := kl.lines[p]; n <= line && n > bestLine {
			best, bestLine = p, n
		}
	}
	if bestLine == line {
		return best
	}
	// The decoder named the table, or a key before the line: the key
	// written on the line, the longest path there (a header line holds
	// both "check" and "check[1]"), within that table if one is.
	on, within := "", ""
	for p, n := range kl.lines {
		if n != line {
			continue
		}
		if len(p) > len(on) || (len(p) == len(on) && p > on) {
			on = p
		}
		if strings.HasPrefix(p, best) && (len(p) > len(within) || (len(p) == len(within) && p > within)) {
			within = p
		}
	}
	switch {
	case within != "":
		return within
	case on != "":
		return on
	}
	return best
}

// line finds the line of path, falling back to its enclosing table and then
// to line 1, so every message has a line even for a key that was left out.
func (kl keyLines) line(path string) int {
	for p := path; p != ""; {
		if n, ok := kl.lines[p]; ok {
			return n
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 1
}

func normKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}
