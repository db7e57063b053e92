package bridge

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Request ids (and so job ids) are schema.NewID: 128 random bits, so one
// caller's id tells nothing of another's.
func TestRequestIDsAreRandom(t *testing.T) {
	e := echo.New()
	h := requestID(func(echo.Context) error { return nil })
	ids := make([]string, 1000)
	for i := range ids {
		rec := httptest.NewRecorder()
		if err := h(e.NewContext(httptest.NewRequest(http.MethodGet, "/", nil), rec)); err != nil {
			t.Fatal(err)
		}
		ids[i] = rec.Header().Get(HeaderRequestID)
		if !schema.ValidRequestID(ids[i]) {
			t.Fatalf("request id %q is not valid", ids[i])
		}
	}
	checkRandomIDs(t, ids)
}

// checkRandomIDs asserts that ids are schema.IDLen of [a-z2-7], that each character varies, and that no
// two of them share more than a 6-character prefix (two of 1000 random ids
// do with probability about 5e-4; consecutive NUIDs share 12 characters or
// more).
func checkRandomIDs(t *testing.T, ids []string) {
	t.Helper()
	for _, id := range ids {
		if len(id) != schema.IDLen || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("id %q; want %d of [a-z2-7]", id, schema.IDLen)
		}
	}
	for i := range schema.IDLen { // a fixed part would be the same in all
		if !slices.ContainsFunc(ids, func(id string) bool { return id[i] != ids[0][i] }) {
			t.Errorf("character %d is %q in all %d ids: not random", i, ids[0][i], len(ids))
		}
	}
	sorted := slices.Sorted(slices.Values(ids))
	for i := 1; i < len(sorted); i++ {
		n := 0
		for n < len(sorted[i]) && sorted[i][n] == sorted[i-1][n] {
			n++
		}
		if n > 6 {
			t.Fatalf("%q and %q share a %d-character prefix: sequential, not random", sorted[i-1], sorted[i], n)
		}
	}
}
