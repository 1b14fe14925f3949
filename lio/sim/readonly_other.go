//go:build !linux

package sim

// readOnlyMount is false where statfs has no mount flags to read.
func readOnlyMount(string) bool { return false }
