//go:build !race

package csmworker_test

const raceEnabled = false
