// Package sims holds caledger's workload, scale and fault simulations. Each
// subdirectory is a program that prints figures with the baseline it measured in
// the same run; BENCHMARKS.md records them with the command that produced them.
package sims
