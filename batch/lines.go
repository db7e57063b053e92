package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Plan is what a runner holds of a validated batch: the lines to run, and
// how many lines were refused up front. It is bounded by the file's line
// count (schema.MaxBatchLines), never by its size: a line keeps its number,
// its custom_id (at most MaxCustomIDBytes) and its model (one of the
// catalogue's). The refused lines' errors are not held: they are kept with
// the plan in the files bucket ("<batch id>.plan", see plan.go) once the
// batch leaves validating, and read from there into the error file; so a
// resumed batch runs exactly the lines it counted.
type Plan struct {
	Valid []PlanLine
	// Refused is the number of lines refused up front.
	Refused int
	// Total is the number of requests in the file (non-blank lines).
	Total int
	// MaxLine is the longest line the validator read whole: every line
	// to run is at most this long, and a runner reads them with at least
	// this limit, whatever its own BRIDGE_MAX_BODY_BYTES (0 in a plan
	// stored before it was kept).
	MaxLine int
}

// PlanLine is one line to run.
type PlanLine struct {
	Line     int    `json:"line"` // index among the file's lines, from 0
	CustomID string `json:"custom_id"`
	Model    string `json:"model"`
}

// MaxCustomIDBytes is the longest custom_id a batch line may have, in
// bytes of its decoded string (an invalid UTF-8 byte counts as the three
// of U+FFFD, which it decodes to). OpenAI documents no limit; 512 bytes
// hold any id a caller means (a UUID is 36), and keep what a runner holds
// per line small: a longer one refuses the line, before any other check.
const MaxCustomIDBytes = 512

// maxEchoBytes bounds a caller's value (custom_id, method, url) quoted in
// a refusal, and maxRefusalBytes a refused line's whole message.
const (
	maxEchoBytes    = 128
	maxRefusalBytes = 512
)

// clip shortens s to at most limit bytes, cut at a character boundary
// and ending in "..." when it was cut, so a refusal never echoes a long
// value in full.
func clip(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	cut := limit - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.ToValidUTF8(s[:cut], "") + "..."
}

// splitLines cuts a JSONL file into its lines (without "\n" or "\r\n").
// Blank lines are kept as empty entries, so an index is a line number - 1.
func splitLines(data []byte) [][]byte {
	lines := bytes.Split(data, []byte("\n"))
	if n := len(lines); n > 0 && len(lines[n-1]) == 0 {
		lines = lines[:n-1]
	}
	for i, l := range lines {
		lines[i] = bytes.TrimSuffix(l, []byte("\r"))
	}
	return lines
}

// CountLines counts the non-blank lines of a JSONL file.
func CountLines(data []byte) int {
	n := 0
	for _, l := range splitLines(data) {
		if len(bytes.TrimSpace(l)) > 0 {
			n++
		}
	}
	return n
}

// Validator checks batch lines through the admission core, the way
// POST /v1/chat/completions checks a request, media included.
type Validator struct {
	Core *admission.Core
	// MaxBodyBytes bounds a line's request body (admission
	// Config.MaxBodyBytes, BRIDGE_MAX_BODY_BYTES); a line longer than it
	// plus LineOverhead is refused without being read whole. Default
	// admission.DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

// LineOverhead is the room a batch line has besides its request body: its
// custom_id, method and url, and the JSON around them.
const LineOverhead = 64 << 10

// lineTooLong is the refusal of a line over max bytes.
func lineTooLong(max int) *schema.Error {
	return &schema.Error{Status: http.StatusRequestEntityTooLarge, Type: schema.TypeInvalidRequest, Code: schema.CodeRequestTooLarge,
		Message: fmt.Sprintf("the line is longer than the %d bytes a batch line may hold (the largest request body, BRIDGE_MAX_BODY_BYTES, and %d bytes for custom_id, method and url).", max, LineOverhead)}
}

// maxLine is the longest line v reads whole.
func (v Validator) maxLine() int {
	if v.MaxBodyBytes <= 0 {
		return admission.DefaultMaxBodyBytes + LineOverhead
	}
	return int(v.MaxBodyBytes) + LineOverhead
}

// Plan validates every line of an input file, read from r line by line,
// for batch id, as who (the batch's creator) would send it, and writes
// the plan's entries to w as it goes (see planWriter): a valid line's
// PlanLine, a refused line's error line, and the counts last. It holds
// one line at a time, and the Plan it returns; an error is r's or w's.
func (v Validator) Plan(ctx context.Context, id string, who keys.Caller, r io.Reader, w io.Writer) (Plan, error) {
	var p Plan
	pw := newPlanWriter(w)
	seen := map[string]bool{}
	models := map[string]string{} // one copy of each model name
	lr := newLineReader(r, v.maxLine())
	for {
		raw, i, tooLong, err := lr.next()
		if errors.Is(err, io.EOF) {
			p.MaxLine = v.maxLine()
			return p, pw.end(p)
		}
		if err != nil {
			return Plan{}, err
		}
		if !tooLong && len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		p.Total++
		var customID, model string
		if tooLong {
			err = lineTooLong(v.maxLine())
		} else {
			customID, model, err = v.line(ctx, id, who, i, raw, seen)
		}
		if err != nil {
			e := lineError(err)
			code := e.Code
			if code == "" {
				code = schema.CodeInvalidBatchLine
			}
			var cid *string
			if customID != "" {
				cid = &customID
			}
			p.Refused++
			if err := pw.refused(schema.BatchOutputLine{
				ID: requestLineID(id, i), CustomID: cid,
				Error: &schema.BatchLineError{Code: code, Message: clip(fmt.Sprintf("Line %d: %s", i+1, e.Message), maxRefusalBytes)},
			}); err != nil {
				return Plan{}, err
			}
			continue
		}
		seen[customID] = true
		if m, ok := models[model]; ok {
			model = m
		} else {
			models[model] = model
		}
		l := PlanLine{Line: i, CustomID: customID, Model: model}
		p.Valid = append(p.Valid, l)
		if err := pw.valid(l); err != nil {
			return Plan{}, err
		}
	}
}

// lineError is a line's refusal as a *schema.Error; a body over the
// core's limit is request_too_large.
func lineError(err error) *schema.Error {
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return &schema.Error{Status: http.StatusRequestEntityTooLarge, Type: schema.TypeInvalidRequest, Code: schema.CodeRequestTooLarge,
			Message: fmt.Sprintf("the request body is larger than the %d bytes this bridge accepts (BRIDGE_MAX_BODY_BYTES).", mbe.Limit)}
	}
	return schema.AsError(err)
}

// line checks one line and returns its custom_id (when it has one, and
// it is at most MaxCustomIDBytes) and model.
func (v Validator) line(ctx context.Context, id string, who keys.Caller, line int, raw []byte, seen map[string]bool) (customID, model string, err error) {
	var in schema.BatchInputLine
	if err := json.Unmarshal(raw, &in); err != nil {
		var probe struct {
			CustomID string `json:"custom_id"`
		}
		_ = json.Unmarshal(raw, &probe)
		if len(probe.CustomID) > MaxCustomIDBytes {
			probe.CustomID = ""
		}
		return probe.CustomID, "", schema.Invalid("", schema.CodeInvalidJSON, "the line is not a JSON object of the form {\"custom_id\", \"method\", \"url\", \"body\"}: %s.", clip(err.Error(), maxEchoBytes))
	}
	switch {
	case len(in.CustomID) > MaxCustomIDBytes:
		return "", "", schema.Invalid("custom_id", schema.CodeInvalidBatchLine, "the custom_id is %d bytes long; a batch line's custom_id may hold at most %d bytes.", len(in.CustomID), MaxCustomIDBytes)
	case in.CustomID == "":
		return "", "", schema.Invalid("custom_id", schema.CodeInvalidBatchLine, "the line has no 'custom_id'.")
	case seen[in.CustomID]:
		return in.CustomID, "", schema.Invalid("custom_id", schema.CodeDuplicateCustom, "the custom_id '%s' is used by an earlier line; each line needs its own.", clip(in.CustomID, maxEchoBytes))
	case in.Method != "POST":
		return in.CustomID, "", schema.Invalid("method", schema.CodeInvalidBatchLine, "'method' must be POST, got %q.", clip(in.Method, maxEchoBytes))
	case in.URL != schema.BatchEndpoint:
		return in.CustomID, "", schema.Invalid("url", schema.CodeInvalidBatchLine, "'url' must be %s, the batch's endpoint, got %q.", schema.BatchEndpoint, clip(in.URL, maxEchoBytes))
	}
	ck, err := v.Core.Check(lineRequest(id, line, in.Body, who))
	if err == nil {
		err = v.Core.CheckMedia(ctx, ck)
	}
	if err != nil {
		return in.CustomID, "", err
	}
	return in.CustomID, ck.Chat.Model, nil
}

// lineRequest is the admission request of line i of batch id, sent by
// who, the batch's creator (Record.Creator).
func lineRequest(id string, line int, body []byte, who keys.Caller) admission.Request {
	return admission.Request{ID: JobID(id, line), Body: body, Caller: who, Door: admission.DoorBatch, Lane: admission.Batch,
		Line: &admission.BatchLine{BatchID: id, Line: line},
		// A line over its key's rpm_limit waits for its slot; past
		// keys.MaxReserveAhead the 429 hands it back to the driver, which
		// offers it again later.
		QueueWait: true}
}

// lineBody returns the request body of a valid line.
func lineBody(raw []byte) (json.RawMessage, error) {
	var in schema.BatchInputLine
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, err
	}
	return in.Body, nil
}

// JobID is the queue job id of line i of batch id.
func JobID(id string, line int) string { return id + "-" + strconv.Itoa(line) }

// AnswerKey is where the worker keeps the answer of line i of batch id
// (the job's idempotency key).
func AnswerKey(id string, line int) string { return admission.BatchAnswerKey(id, line) }

func requestLineID(id string, line int) string { return "batch_req_" + JobID(id, line) }
