package soak

import (
	"bytes"
	"strings"
	"testing"
)

// TestLedger: a request's own answer, once, is answered; another's
// answer is crossed and a second delivery of an answer duplicated (both
// fail the run); an accepted request without an answer is lost (fails);
// a refusal before acceptance and a caller that hung up do not fail it.
func TestLedger(t *testing.T) {
	for _, tc := range []struct {
		name    string
		records []Record
		want    Counts
		dup     int64
		ok      bool
	}{
		{"own answers", []Record{{Kind: KindChat, Text: "a", Answer: "a"}, {Kind: KindChat, Text: "b", Answer: "b"}},
			Counts{Sent: 2, Answered: 2}, 0, true},
		{"another's answer", []Record{{Kind: KindChat, Text: "a", Answer: "a"}, {Kind: KindChat, Text: "b", Answer: "a"}},
			Counts{Sent: 2, Answered: 1, Crossed: 1}, 1, false},
		{"one answer delivered twice", []Record{{Kind: KindBatchLine, Text: "a", Answer: "a"}, {Kind: KindBatchLine, Text: "a", Answer: "a"}},
			Counts{Sent: 2, Answered: 2}, 1, false},
		{"lost", []Record{{Kind: KindJob, Text: "a", Problem: "job failed"}},
			Counts{Sent: 1, Lost: 1}, 0, false},
		{"refused and hung up", []Record{{Kind: KindChat, Text: "a", Refused: true, Problem: "status 429"}, {Kind: KindHangup, Text: "b", HungUp: true}},
			Counts{Sent: 2, Refused: 1, HungUp: 1}, 0, true},
		{"hung up after the answer came", []Record{{Kind: KindHangup, Text: "b", Answer: "b", HungUp: true}},
			Counts{Sent: 1, Answered: 1}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLedger()
			for _, r := range tc.records {
				l.Add(r)
			}
			s := l.Summary()
			if s.Total != tc.want || s.Duplicated != tc.dup || s.OK() != tc.ok {
				t.Errorf("total %+v, duplicated %d, ok %v; want %+v, %d, %v", s.Total, s.Duplicated, s.OK(), tc.want, tc.dup, tc.ok)
			}
			var buf bytes.Buffer
			if err := l.WriteCounts(&buf); err != nil {
				t.Fatal(err)
			}
			if !tc.ok && !strings.Contains(buf.String(), "first problems:") {
				t.Errorf("no problem quoted:\n%s", buf.String())
			}
		})
	}
}

// TestAnswerText: the text after the mock's prefix, or the whole content.
func TestAnswerText(t *testing.T) {
	for in, want := range map[string]string{
		"mock[0123abcd]: soak chat 1 x": "soak chat 1 x",
		"mock[0123abcd]: a ]: b":        "a ]: b",
		"something else":                "something else",
		"mock[no separator":             "mock[no separator",
	} {
		if got := answerText(in); got != want {
			t.Errorf("answerText(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestParseBatchFile: a record per output line, by custom_id: an answer
// for a 200, a problem for another status or an error line; a custom_id
// twice gives two records.
func TestParseBatchFile(t *testing.T) {
	file := `{"id":"batch_req_1","custom_id":"b1-0","response":{"status_code":200,"request_id":"1","body":{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"mock[aa]: soak batch b1-0 n"},"finish_reason":"stop"}]}},"error":null}
{"id":"batch_req_2","custom_id":"b1-1","response":{"status_code":502,"request_id":"2","body":{"error":{"message":"upstream"}}},"error":null}

{"id":"batch_req_3","custom_id":"b1-2","response":null,"error":{"code":"batch_expired","message":"expired"}}
{"id":"batch_req_1","custom_id":"b1-0","response":{"status_code":200,"request_id":"1","body":{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"mock[aa]: soak batch b1-0 n"},"finish_reason":"stop"}]}},"error":null}
`
	records := map[string][]Record{}
	if err := parseBatchFile(strings.NewReader(file), records); err != nil {
		t.Fatal(err)
	}
	if rs := records["b1-0"]; len(rs) != 2 || rs[0].Answer != "soak batch b1-0 n" || rs[1].Answer != rs[0].Answer {
		t.Errorf("b1-0: %+v", rs)
	}
	if rs := records["b1-1"]; len(rs) != 1 || rs[0].Answer != "" || !strings.HasPrefix(rs[0].Problem, "status 502") {
		t.Errorf("b1-1: %+v", rs)
	}
	if rs := records["b1-2"]; len(rs) != 1 || rs[0].Problem != "batch_expired: expired" {
		t.Errorf("b1-2: %+v", rs)
	}
	if err := parseBatchFile(strings.NewReader(`{"id":"x","response":null}`), records); err == nil {
		t.Error("a line without custom_id was taken")
	}
}

// TestReadStream: the deltas' content up to [DONE]; a stream cut before
// it, or with an error event, is an error.
func TestReadStream(t *testing.T) {
	const chunks = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" +
		": keep-alive\n\n" +
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"mock[aa]: \"}}]}\n\n" +
		"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"}}]}\n\n"
	got, err := readStream(strings.NewReader(chunks + "data: [DONE]\n\n"))
	if err != nil || got != "mock[aa]: hello" {
		t.Errorf("whole stream: %q, %v", got, err)
	}
	if _, err := readStream(strings.NewReader(chunks)); err == nil {
		t.Error("a stream without [DONE] was taken")
	}
	if _, err := readStream(strings.NewReader(chunks + "data: {\"error\":{\"message\":\"cut\"}}\n\n")); err == nil {
		t.Error("a stream with an error event was taken")
	}
}
