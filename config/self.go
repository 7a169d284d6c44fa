package config

import (
	"fmt"
	"net/netip"
)

// FindSelf picks this machine's node: by the --node flag, else by hostname,
// else by which node's addresses are local. The string says which rule
// matched, for the daemon to log.
func (c *Config) FindSelf(flag, hostname string, local []netip.Addr) (*Node, string, error) {
	if flag != "" {
		if n := c.Node(flag); n != nil {
			return n, "--node " + flag, nil
		}
		return nil, "", fmt.Errorf("%s: --node %s: no [[node]] has that name", c.File, flag)
	}
	if n := c.Node(hostname); n != nil {
		return n, "hostname " + hostname, nil
	}
	var found []*Node
	for i := range c.Nodes {
		n := &c.Nodes[i]
		for _, a := range local {
			if a == n.ReplicationAddress || (n.PublicAddress.IsValid() && a == n.PublicAddress.Addr()) {
				found = append(found, n)
				break
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], "local address of " + found[0].Name, nil
	case 0:
		return nil, "", fmt.Errorf("%s: cannot tell which node this is: hostname %q names no [[node]] and no node's address is local; pass --node", c.File, hostname)
	default:
		return nil, "", fmt.Errorf("%s: both nodes' addresses are local here; pass --node", c.File)
	}
}
