// Package stress is actionsync's self-checking stress and fault suite: storms of cut and
// resumed subscribers, connect/cancel churn, hostile bytes on the wire, slow and stuck
// readers, abuse of limits, shutdown under load, killed processes, and TLS with expiring
// tokens and refused requests, each against real `actionsync serve` processes over real
// sockets, each failing on any loss, duplicate, reorder or leak and printing its figures.
//
// The suite lives in this package's tests and runs only when asked:
//
//	STRESS=1 STRESS_DURATION=20s go test -count=1 -run Stress ./stress/
//
// Every random choice comes from a PRNG seeded by STRESS_SEED (default: the clock,
// printed), so a failure prints the command that repeats its choices. docs/reliability.md
// lists the scenarios, the guarantees they prove and their figures.
package stress
