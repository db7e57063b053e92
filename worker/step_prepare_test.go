package worker

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestPrepare(t *testing.T) {
	cases := []struct {
		name     string
		model    string
		req      string
		override bool
		status   int // of the refusal; 0: the job runs
		code     string
		hash     string // the LaaS call's preset hash
	}{
		{"translated with the catalogue's preset", "m", hello, false, 0, "", "p1"},
		{"unknown model", "nope", hello, false, 404, schema.CodeModelNotFound, ""},
		{"not a request", "m", `"just a string"`, false, 400, schema.CodeInvalidJSON, ""},
		{"invalid role", "m", `{"model":"m","messages":[{"role":"tool","content":"x"}]}`, false, 400, schema.CodeInvalidValue, ""},
		{"preset override refused", "m", `{"model":"m","preset_hash":"custom","messages":[{"role":"user","content":"x"}]}`, false, 400, schema.CodePresetOverride, ""},
		{"preset override allowed", "m", `{"model":"m","preset_hash":"custom","messages":[{"role":"user","content":"x"}]}`, true, 0, "", "custom"},
		// The admission core checks images and documents once, before the
		// request is queued; the worker trusts the envelope and does not
		// decode them again (multimodal.Check would refuse this one).
		{"multimodal parts are not checked again", "m",
			`{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,not-base64"}}]}]}`, false, 0, "", "p1"},
		// Nor does it read a PDF again: this one is not a PDF at all, so a
		// page count here would refuse it (invalid_document).
		{"documents are not read again", "m",
			`{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_data":"bm90IGEgUERG"}},{"type":"document","document_url":{"url":"data:application/pdf;base64,bm90IGEgUERG"}}]}]}`, false, 0, "", "p1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			f.p.cfg.AllowPresetOverride = tc.override
			j, msg := stepJob(t, schema.SubjectInteractive, 1)
			j.env.Model, j.env.Request = tc.model, json.RawMessage(tc.req)
			j.model, j.laasReq = schema.Model{}, nil
			var next nextRecorder
			f.p.prepare(next.handle)(context.Background(), j)
			if tc.status == 0 {
				if next.called() != 1 || msg.settled() != "[]" {
					t.Fatalf("next called %d, settled %s (%+v); want the job to run", next.called(), msg.settled(), f.replies(t))
				}
				if j.laasReq == nil || j.laasReq.Hash != tc.hash || j.model.Alias != "m" {
					t.Errorf("LaaS call %+v for model %q; want hash %q", j.laasReq, j.model.Alias, tc.hash)
				}
				return
			}
			if r := f.onlyReply(t); next.called() != 0 || r.Status != tc.status || code(r) != tc.code || msg.settled() != "[ack]" {
				t.Errorf("next called %d, reply %d %q, settled %s; want %d %q and an ack", next.called(), r.Status, code(r), msg.settled(), tc.status, tc.code)
			}
		})
	}
}
