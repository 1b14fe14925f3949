package agent

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestSecondInstanceRefused(t *testing.T) {
	dir := t.TempDir()
	first, err := AcquireLock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pid, err := ReadPID(dir); err != nil || pid != os.Getpid() {
		t.Fatalf("ReadPID = %d, %v; want %d", pid, err, os.Getpid())
	}
	_, err = AcquireLock(dir)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second AcquireLock = %v, want an error naming pid %d", err, os.Getpid())
	}
	first.Release()
	again, err := AcquireLock(dir)
	if err != nil {
		t.Fatalf("AcquireLock after Release: %v", err)
	}
	again.Release()
	if _, err := ReadPID(dir); err == nil {
		t.Error("pid file left behind after Release")
	}
}
