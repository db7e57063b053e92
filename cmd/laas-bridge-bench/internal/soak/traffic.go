package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/laas-bridge/laas-bridge/batch/batchcli"
	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/load"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Traffic is the soak's load: requests at Rate per second for Duration,
// in turn 4 chat completions, 2 streamed ones, 2 async jobs and 2 callers
// that hang up (one of each kind of call), and a batch every BatchEvery.
type Traffic struct {
	Base  string // the gateway's base URL
	Model string
	Rate  int
	// Duration is how long new requests are sent; the answers of those in
	// flight are awaited after it, each for at most Timeout.
	Duration time.Duration
	// BatchEvery: a batch of BatchLines lines starts at BatchEvery/2 and
	// then every BatchEvery while Duration lasts (0: no batches).
	BatchEvery time.Duration
	BatchLines int
	// HangupWithin: a caller that hangs up does so after a random time up
	// to it (one that got its answer first counts as answered).
	HangupWithin time.Duration
	// Timeout bounds each request: a chat call, a job from its submission
	// to its result, a batch from its upload to its output.
	Timeout time.Duration
	// Nonce makes this run's texts its own.
	Nonce string
	// Progress, if set, gets a line per batch.
	Progress io.Writer
}

// Validate reports every invalid setting at once.
func (t Traffic) Validate() error {
	var errs []error
	if t.Rate < 1 || t.Duration <= 0 || t.Timeout <= 0 || t.HangupWithin <= 0 {
		errs = append(errs, errors.New("soak: the rate, the duration, the timeout and the hang-up time must be positive"))
	}
	if t.BatchEvery < 0 {
		errs = append(errs, errors.New("soak: the batch interval must not be negative"))
	}
	if t.BatchEvery > 0 && (t.BatchLines < 1 || t.BatchLines > schema.MaxBatchLines) {
		errs = append(errs, fmt.Errorf("soak: batch lines must be 1 to %d, got %d", schema.MaxBatchLines, t.BatchLines))
	}
	return errors.Join(errs...)
}

// Run sends the traffic and waits for every answer (or its Timeout),
// recording each request in l.
func (t Traffic) Run(ctx context.Context, l *Ledger) error {
	if err := t.Validate(); err != nil {
		return err
	}
	client := load.NewClient(1024)
	bc, err := batchcli.NewHTTPClient(t.Base, "")
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	start := time.Now()
	if t.BatchEvery > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.batches(ctx, bc, l, start)
		}()
	}
	interval := time.Second / time.Duration(t.Rate)
	for i := 0; time.Duration(i)*interval < t.Duration; i++ {
		if !sleepUntil(ctx, start.Add(time.Duration(i)*interval)) {
			break
		}
		l.start()
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.finish(t.one(ctx, client, i))
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// sleepUntil waits until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	if d := time.Until(t); d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

// one sends request i of the mix.
func (t Traffic) one(ctx context.Context, c *http.Client, i int) Record {
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	switch i % 10 {
	case 0, 1, 2, 3:
		return t.chat(ctx, c, KindChat, t.text("chat", i), false)
	case 4, 5:
		return t.chat(ctx, c, KindStream, t.text("stream", i), true)
	case 6, 7:
		return t.job(ctx, c, t.text("job", i))
	default:
		hctx, hangUp := context.WithTimeout(ctx, rand.N(t.HangupWithin)+1)
		defer hangUp()
		r := t.chat(hctx, c, KindHangup, t.text("hangup", i), i%10 == 9)
		if r.Answer == "" && hctx.Err() != nil && ctx.Err() == nil {
			r.HungUp = true
		}
		return r
	}
}

// text is request i's own text.
func (t Traffic) text(kind string, i int) string {
	return fmt.Sprintf("soak %s %d %s", kind, i, t.Nonce)
}

func (t Traffic) chatBody(text string, stream bool) []byte {
	body, _ := json.Marshal(map[string]any{
		"model":    t.Model,
		"stream":   stream,
		"messages": []map[string]string{{"role": "user", "content": text}},
	})
	return body
}

func (t Traffic) post(ctx context.Context, c *http.Client, path string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(t.Base, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.Do(req)
}

// chat sends one chat completion, streamed or not, and reads its answer.
func (t Traffic) chat(ctx context.Context, c *http.Client, kind Kind, text string, stream bool) Record {
	r := Record{Kind: kind, Text: text}
	start := time.Now()
	resp, err := t.post(ctx, c, "/v1/chat/completions", t.chatBody(text, stream))
	if err != nil {
		r.Problem = err.Error()
		return r
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.Problem, r.Refused = refusal(resp)
		return r
	}
	var content string
	if stream {
		content, err = readStream(resp.Body)
	} else {
		content, err = readCompletion(resp.Body)
	}
	if err != nil {
		r.Problem = err.Error()
		return r
	}
	r.Answer, r.Latency = answerText(content), time.Since(start)
	return r
}

// refusal describes an answer other than 200 and says whether it turned
// the request away before it was accepted.
func refusal(resp *http.Response) (problem string, refused bool) {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var eb struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &eb)
	refused = resp.StatusCode == http.StatusTooManyRequests ||
		(resp.StatusCode == http.StatusServiceUnavailable && eb.Error.Code == "server_overloaded")
	return fmt.Sprintf("status %d: %.200s", resp.StatusCode, bytes.TrimSpace(b)), refused
}

// readCompletion reads a chat.completion's content.
func readCompletion(r io.Reader) (string, error) {
	var cc schema.ChatCompletion
	if err := json.NewDecoder(r).Decode(&cc); err != nil {
		return "", fmt.Errorf("answer: %w", err)
	}
	if len(cc.Choices) != 1 {
		return "", fmt.Errorf("answer with %d choices", len(cc.Choices))
	}
	return cc.Choices[0].Message.Content, nil
}

// readStream reads an SSE stream of chunks to its [DONE] and returns the
// content its deltas add up to; a stream that ends without [DONE], or with
// an error event, is an error.
func readStream(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var content strings.Builder
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue // blank lines, ": keep-alive" comments
		}
		if data == "[DONE]" {
			return content.String(), nil
		}
		var ev struct {
			schema.ChatCompletionChunk
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return "", fmt.Errorf("stream event: %w", err)
		}
		if len(ev.Error) > 0 && string(ev.Error) != "null" {
			return "", fmt.Errorf("stream error event: %.200s", ev.Error)
		}
		for _, ch := range ev.Choices {
			if ch.Delta.Content != nil {
				content.WriteString(*ch.Delta.Content)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("stream cut: %w", err)
	}
	return "", errors.New("stream ended without [DONE]")
}

// jobView is what the soak reads of a job of the jobs API.
type jobView struct {
	ID         string                 `json:"id"`
	Status     schema.JobStatus       `json:"status"`
	Result     *schema.ChatCompletion `json:"result"`
	StatusCode int                    `json:"status_code"`
	Error      json.RawMessage        `json:"error"`
}

// job submits an async job and long-polls it to its end.
func (t Traffic) job(ctx context.Context, c *http.Client, text string) Record {
	r := Record{Kind: KindJob, Text: text}
	start := time.Now()
	resp, err := t.post(ctx, c, "/v1/queue/jobs", t.chatBody(text, false))
	if err != nil {
		r.Problem = "submit: " + err.Error()
		return r
	}
	if resp.StatusCode != http.StatusAccepted {
		r.Problem, r.Refused = refusal(resp)
		resp.Body.Close()
		return r
	}
	var j jobView
	err = json.NewDecoder(resp.Body).Decode(&j)
	resp.Body.Close()
	if err != nil || j.ID == "" {
		r.Problem = fmt.Sprintf("submit: no job id (%v)", err)
		return r
	}
	url := strings.TrimRight(t.Base, "/") + "/v1/queue/jobs/" + j.ID + "?wait=30s"
	var last string
	for !j.Status.Final() {
		if ctx.Err() != nil {
			r.Problem = fmt.Sprintf("job %s still %s at the timeout (last error: %s)", j.ID, j.Status, last)
			return r
		}
		if err := getJSON(ctx, c, url, &j); err != nil {
			last = err.Error()
			sleepUntil(ctx, time.Now().Add(time.Second))
		}
	}
	if j.Status != schema.JobSucceeded || j.Result == nil || len(j.Result.Choices) != 1 {
		r.Problem = fmt.Sprintf("job %s %s, status code %d: %.200s", j.ID, j.Status, j.StatusCode, j.Error)
		return r
	}
	r.Answer, r.Latency = answerText(j.Result.Choices[0].Message.Content), time.Since(start)
	return r
}

// getJSON GETs url and decodes a 200 answer into v.
func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		p, _ := refusal(resp)
		return errors.New(p)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
