// Package laasmock is a look-alike of the Wanted LaaS preset API, for tests,
// the demo and benchmarks. It serves only
//
//	POST /api/preset/v2/chat/completions   (schema.LaaSChatPath)
//
// and answers every valid request with a deterministic function of the
// request, so a test can predict the answer byte for byte (apart from
// "created").
//
// # Checks, in order
//
//  1. Any other path: 404. Another method on the path: 405 with "Allow: POST".
//  2. A missing or empty "project" or "apiKey" header, or one that differs
//     from Config.ProjectCode / Config.APIKey when those are set: 401.
//  3. A body larger than MaxBodyBytes: 413. A body that is not a JSON object
//     of the LaaS request shape (including "params" that is not an object of
//     strings), an empty "hash", no messages, or a message whose role is not
//     system, user or assistant: 400.
//  4. Fault directives (see Faults) in the last user message that do not
//     parse: 400.
//
// Error bodies are small JSON objects, {"status": 400, "error": "Bad Request",
// "message": "..."}, whose message names the problem. They never contain a
// header value.
//
// A request that passes the checks has reached the answer stage: it counts in
// Calls and gets an entry in Log. Then, in this order:
//
//  0. Faults: a request whose last user message holds fault directives is
//     handled as Faults says, without injection or latency.
//  1. Injection: one draw of a math/rand/v2 PCG source seeded with
//     (Config.Seed, 0), shared by all requests and guarded by a mutex, decides
//     the outcome: draw < Rate429 answers 429 with "Retry-After: 1";
//     draw < Rate429+Rate500 answers 500; otherwise the request is answered.
//     With rates of zero no draw is made.
//  2. Latency: the handler waits Config.Latency (injected failures too). If the
//     request's context ends first (the client went away), it returns at once,
//     writes nothing and records status 499.
//  3. The answer, status 200.
//
// # Faults
//
// A test makes one request misbehave, as a real upstream can, by putting
// directives in the text of its last user message: words of the form
// "laasmock:<key>=<value>" (FaultPrefix), anywhere among other words.
// Keys:
//
//	fault=hang       read the request and never answer; when the client goes
//	                 away the entry gets StatusClientClosed
//	fault=stall      status 200, Content-Length of the whole answer, the first
//	                 half of the answer's bytes, then nothing until the client
//	                 goes away
//	fault=reset      the same headers and half, then the connection is closed
//	                 with a TCP reset (SO_LINGER 0)
//	fault=truncate   the same headers and half, then a clean close (FIN): the
//	                 body is shorter than its Content-Length
//	fault=nonjson    status 200 with an HTML body (a proxy's error page)
//	trickle=<dur>    the whole answer, status 200, sent in ten pieces, one
//	                 every <dur>/10 (a time.ParseDuration value)
//	status=<code>    answer <code> (300 to 599) with the mock's error body;
//	                 429 carries Retry-After
//	status=<code>x<n> the same for the first n requests with this exact body
//	                 (retries of one call send the same body); later ones are
//	                 handled as requests without directives (the mock
//	                 remembers the last 4096 such bodies)
//	retry-after=<v>  the Retry-After of a 429 status directive, as sent
//	                 (default "1")
//
// A request names one fault or trickle, or one status, not both. The answer
// a fault sends or cuts is the one the request would have had. Calls and Log
// count a fault request like any other; Served counts only a trickle (the
// one fault that delivers a whole answer); the entry's Status is 200 once
// the 200 headers are written (the answer may still be cut), the status of
// a status directive, or StatusClientClosed for a hang. The hang and stall
// faults hold their handler until the client goes away: close clients
// before the server.
//
// # The answer
//
// The text of a message (MessageText) is its content when the content is a
// string; when it is an array of parts, what each part contributes, joined
// with a single space:
//
//	"text" part        its text
//	"image_url" part   a placeholder for image_url.url, as below, of kind "image"
//	"document" part    a placeholder for document_url.url, of kind "document"
//	any other part     an empty string
//
// The placeholder names the bytes LaaS received, so that a test can check
// them against a digest it computed (Digest):
//
//	data URL, ";base64" data that decodes    [<kind> sha256:<digest>]
//	data URL, data that does not decode      [<kind> invalid-base64]
//	any other URL, as it is                  [<kind> <url>]
//	no URL                                   [<kind>]
//
// where <digest> is Digest of the decoded bytes: the first 16 hex digits of
// their SHA-256. "data:" is matched in any case, ";base64" too; the data is
// decoded as standard, padded base64 (encoding/base64.StdEncoding). For
// example an image part holding "data:image/png;base64,<b64>" contributes
// "[image sha256:1a2b3c4d5e6f7a8b]" and one holding "https://x.test/a.png"
// contributes "[image https://x.test/a.png]".
//
// The answer's fields are:
//
//   - id: "mock-" followed by the first 16 hex digits of the SHA-256 of the
//     request body, exactly as received.
//   - object: "chat.completion".
//   - created: time.Now().Unix().
//   - model: the request's "model", or "mock-model" when it is empty.
//   - choices: one, index 0, role "assistant", finish_reason "stop", content
//     "mock[<hash>]: <text of the last user message>" (the text is empty when
//     there is no user message, leaving a trailing space after the colon).
//   - usage: prompt_tokens is the number of words (strings.Fields) in the
//     texts of all messages, summed; completion_tokens the number of words in
//     the content; total_tokens their sum.
//
// With Config.Wild the same answer comes in the shape seen in the wild: the
// content is [{"type": "text", "text": "<content>"}] with "tool_calls": [] next
// to it, created is time.Now().UnixMilli(), object is "chat.completion.chunk",
// usage holds only input_tokens and output_tokens (the prompt and completion
// counts above), and a top-level "session_id" (equal to the id) is added.
//
// # Observing the mock
//
// Calls counts requests that reached the answer stage, Served the 200 answers,
// and Log keeps the last LogCapacity answer-stage requests in arrival order.
// With Config.AccessLog set, one JSON line per request (every request, not
// only answer-stage ones) is written: {"time", "status", "hash",
// "latency_ms", "in_flight", "max_in_flight"}: in_flight is how many
// requests the mock was handling when this one arrived (itself included),
// max_in_flight the most at once so far (also MaxInFlight()); each Log
// entry has its InFlight. All of these are updated before the answer is written, so a
// client holding its answer sees them current. Neither the project nor the
// apiKey header value is ever logged or echoed.
package laasmock
