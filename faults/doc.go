// Package faults is the fault suite: real `xksproxy serve` processes, each in
// a network namespace of its own with the address of deploy/three-site,
// partitioned with iptables, slowed down with an NFQUEUE delayer, killed,
// restarted, starved of disk. It drives them only as an operator and AWS KMS
// would: the binary, its TOML files, the CLI and SigV4-signed XKS requests.
// See DESIGN.md. Its tests need root; elsewhere they skip, saying why.
package faults
