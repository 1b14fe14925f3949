// Package guesttest holds the test of uml.TestMain: its tests run inside
// the guest that TestMain boots.
package guesttest
