// Package netnsrun runs a function on a thread inside another network
// namespace, for sockets that must be opened there (a socket stays in the
// namespace it was made in). The vip manager uses it when told to work in a
// namespace, package lab for its tests and the lab.
package netnsrun

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// In runs f on a locked thread inside ns and brings the thread back.
func In(ns netns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("enter namespace: %w", err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// Never hand a thread in the wrong namespace back to the
		// runtime: locked twice, it ends with the goroutine.
		runtime.LockOSThread()
		return errors.Join(ferr, fmt.Errorf("leave namespace: %w", err))
	}
	return ferr
}
