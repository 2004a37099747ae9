// Command racy has a deliberate data race: two goroutines write one
// variable without synchronisation. Built with -race, it shows that the
// race detector's report is seen (internal/rig's TestRaceDetectorSeesARealRace).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "racy: starting")
	n := 0
	done := make(chan bool)
	go func() {
		n++ // races with the write below
		done <- true
	}()
	n++
	<-done
	fmt.Println("racy: n =", n)
}
