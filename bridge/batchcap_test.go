package bridge

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/laas-bridge/laas-bridge/batch"
	"github.com/laas-bridge/laas-bridge/schema"
)

// A key with BatchMaxPerOwner batches not finished is refused another
// with 429 rate_limit_exceeded, and may create one again once one of its
// batches ends; another key, and the admin, are not held by its batches.
func TestBatchMaxPerOwner(t *testing.T) {
	f := newFixture(t, Config{MasterKey: "sk-master", BatchMaxPerOwner: 2,
		Keys: fakeKeys{secretA: {Token: tokenA}, secretB: {Token: tokenB}}})
	fileA := f.upload(t, secretA)
	first := f.newBatch(t, secretA, fileA)
	f.newBatch(t, secretA, fileA)
	resp, body := f.do(t, "POST", "/v1/batches", batchRequest(fileA), auth(secretA)...)
	var e schema.ErrorBody
	if resp.StatusCode != http.StatusTooManyRequests || json.Unmarshal(body, &e) != nil || e.Error.Code == nil ||
		*e.Error.Code != schema.CodeRateLimitExceeded || !strings.Contains(e.Error.Message, "BRIDGE_BATCH_MAX_PER_OWNER is 2") {
		t.Fatalf("a third batch of key A: %d %s; want 429 %s", resp.StatusCode, body, schema.CodeRateLimitExceeded)
	}
	f.newBatch(t, secretB, f.upload(t, secretB))
	fileAdmin := f.upload(t, "sk-master")
	for range 3 {
		f.newBatch(t, "sk-master", fileAdmin)
	}
	if _, err := f.gw.batches.Update(t.Context(), first, func(r *batch.Record) error {
		r.Batch.Status = schema.BatchCompleted
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	f.newBatch(t, secretA, fileA)
}
