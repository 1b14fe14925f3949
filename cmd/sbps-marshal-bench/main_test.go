package main

import (
	"testing"
	"time"
)

func TestUncovered(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	cases := []struct {
		name  string
		procs []span
		want  time.Duration
	}{
		{"no process", nil, 100 * time.Millisecond},
		{"one process still running at the end", []span{{at(30), at(150)}}, 30 * time.Millisecond},
		{"two processes with a gap", []span{{at(60), at(70)}, {at(10), at(40)}}, 60 * time.Millisecond},
		{"process started before the window", []span{{at(-20), at(50)}}, 50 * time.Millisecond},
		{"process after the window", []span{{at(120), at(130)}}, 100 * time.Millisecond},
	}
	for _, c := range cases {
		if got := uncovered(at(0), at(100), c.procs); got != c.want {
			t.Errorf("%s: uncovered = %s, want %s", c.name, got, c.want)
		}
	}
}
