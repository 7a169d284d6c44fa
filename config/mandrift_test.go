package config

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Issue 15.9: hapair.toml(5) cannot drift from the keys the code reads:
// every key of the file format is documented, and the page names no key
// the code does not read. A top-level key is a bold term (**key**); a
// table's keys are listed on its bold header line (**[table]** a, b, c).
func TestManPageListsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../docs/man/hapair.toml.5.md")
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	tables := map[string][]string{} // table -> keys on its header line
	header := regexp.MustCompile(`(?m)^\*\*\[\[?([a-z_]+)\]\]?\*\*(.*)$`)
	for _, m := range header.FindAllStringSubmatch(page, -1) {
		for _, k := range strings.Split(m[2], ",") {
			tables[m[1]] = append(tables[m[1]], strings.TrimSpace(k))
		}
	}
	for _, path := range fileKeysFolded {
		table, key, nested := strings.Cut(path, ".")
		switch {
		case !nested && isTable(table):
			if _, ok := tables[table]; !ok {
				t.Errorf("hapair.toml(5) has no header line for [%s]", table)
			}
		case !nested && !strings.Contains(page, "**"+table+"**"):
			t.Errorf("hapair.toml(5) does not document the key %s", table)
		case nested && !slices.Contains(tables[table], key):
			t.Errorf("hapair.toml(5) does not list %s on the [%s] line (it lists %v)", key, table, tables[table])
		}
	}
	for table, keys := range tables {
		for _, k := range keys {
			if _, ok := fileKeysFolded[table+"."+k]; !ok && k != "" {
				t.Errorf("hapair.toml(5) lists %s.%s, which the code does not read", table, k)
			}
		}
	}
}

// isTable says whether the top-level key is a table or an array of them.
func isTable(key string) bool {
	for _, p := range fileKeysFolded {
		if strings.HasPrefix(p, key+".") {
			return true
		}
	}
	return false
}

// Every key has its type in VALUE TYPES, by its full name (table.key).
func TestManPageGivesEveryKeysType(t *testing.T) {
	b, err := os.ReadFile("../docs/man/hapair.toml.5.md")
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	start, end := strings.Index(page, "# VALUE TYPES"), strings.Index(page, "# TOP-LEVEL KEYS")
	if start < 0 || end < start {
		t.Fatal("hapair.toml(5) has no VALUE TYPES section before TOP-LEVEL KEYS")
	}
	types := regexp.MustCompile(`[a-z_]+(\.[a-z_]+)?`).FindAllString(page[start:end], -1)
	for _, path := range fileKeysFolded {
		if isTable(path) {
			continue
		}
		if !slices.Contains(types, path) {
			t.Errorf("hapair.toml(5) gives no type for %s", path)
		}
	}
}
