//go:build race

package csmworker_test

// raceEnabled builds the agent binary with -race when the test runs with it.
const raceEnabled = true
