package main

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"sync"
)

type syncMutex = sync.Mutex
type syncCond = sync.Cond

func sortStrings(s []string) { sort.Strings(s) }

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
