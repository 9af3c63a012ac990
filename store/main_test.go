package store

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a stream goroutine running. With
// helperEnv set, the binary is a writer process for TestKilledWriterProcess
// instead.
func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		helperWriter(os.Getenv(helperRootEnv), name)
	}
	goleak.VerifyTestMain(m)
}
