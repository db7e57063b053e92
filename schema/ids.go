package schema

import (
	"crypto/rand"
	"encoding/base32"
)

// idEncoding writes ids in lower-case base32 without padding: letters and
// digits only, valid in subjects, object names and URLs.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// IDLen is the length of a NewID: 128 bits in base32.
const IDLen = 26

// NewID returns 128 bits from crypto/rand as IDLen characters of
// [a-z2-7]: the random part of every request, job, file and batch id.
// Knowing any number of ids tells nothing of the next one, so an id names
// someone's data without being guessable (NUIDs, which the bridge used
// before, follow from two consecutive ones). Valid for ValidRequestID.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return idEncoding.EncodeToString(b[:])
}
