// Package fsutil holds small file system helpers shared by packages that
// write files durably.
package fsutil

import "os"

// SyncDir fsyncs directory dir, making the creation, rename or removal of
// its entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
