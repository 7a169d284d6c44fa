// Package config turns hapair's TOML file into a validated Config.
//
// One file, identical on both nodes, lists the pair, the shared key, the
// timers and the floating addresses (design.md section 2). Every problem is
// reported with the file, the line and the key it concerns, and all problems
// are reported at once, so an operator fixes a file in one pass:
//
//	hapair.toml:14: vip[1].address: 192.0.2.300/24 is not an IP prefix
//
// Array tables are numbered from 1 in messages, as an operator counts them.
// BurntSushi/toml only positions syntax and type errors, so this package maps
// semantic errors back to lines itself (see lines.go).
package config
