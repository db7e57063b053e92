package schema_test

import (
	"net/http"
	"testing"

	"github.com/laas-bridge/laas-bridge/schema"
)

func invalidValue(param, msg string) *schema.Error {
	return &schema.Error{Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest, Code: schema.CodeInvalidValue, Param: param, Message: msg}
}

func unsupported(param, msg string) *schema.Error {
	return &schema.Error{Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest, Code: schema.CodeUnsupported, Param: param, Message: msg}
}

func TestValidate(t *testing.T) {
	const hi = `[{"role":"user","content":"hi"}]`
	tests := []struct {
		name string
		body string
		want *schema.Error // nil: valid
	}{
		// Accepted.
		{"minimal", `{"model":"m","messages":` + hi + `}`, nil},
		{"roles system user assistant", `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}`, nil},
		{"assistant with null content", `{"model":"m","messages":[{"role":"assistant","content":null}]}`, nil},
		{"n 1", `{"model":"m","messages":` + hi + `,"n":1}`, nil},
		{"stream false", `{"model":"m","messages":` + hi + `,"stream":false}`, nil},
		{"stream true", `{"model":"m","messages":` + hi + `,"stream":true}`, nil},
		{"stream with include_usage", `{"model":"m","messages":` + hi + `,"stream":true,"stream_options":{"include_usage":true}}`, nil},
		{"stream_options null include_usage and unknown keys", `{"model":"m","messages":` + hi + `,"stream":true,"stream_options":{"include_usage":null,"future":1}}`, nil},
		{"stream_options JSON null without stream", `{"model":"m","messages":` + hi + `,"stream_options":null}`, nil},
		{"tools fields JSON null", `{"model":"m","messages":` + hi + `,"tools":null,"tool_choice":null,"functions":null,"function_call":null}`, nil},
		{"tool_calls JSON null", `{"model":"m","messages":[{"role":"assistant","content":"a","tool_calls":null}]}`, nil},
		{"tool_calls empty", `{"model":"m","messages":[{"role":"assistant","content":"a","tool_calls":[ ]}]}`, nil},
		{"every part type", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":""},` +
			`{"type":"image_url","image_url":{"url":"https://x.test/a.png"}},{"type":"image_url","image_url":"data:image/png;base64,AA"},` +
			`{"type":"document","document_url":{"url":"data:application/pdf;base64,JVBE"}}]}]}`, nil},
		{"file and input_file parts with data", `{"model":"m","messages":[{"role":"user","content":[` +
			`{"type":"file","file":{"file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"}},` +
			`{"type":"file","file":{"file_data":"JVBE","file_id":"file-1"}},` +
			`{"type":"input_file","file_data":"data:application/pdf;base64,JVBE","filename":"b.pdf"}]}]}`, nil},
		{"scalar params", `{"model":"m","messages":` + hi + `,"params":{"s":"x","n":1.5,"b":false,"z":null}}`, nil},
		{"logprobs false", `{"model":"m","messages":` + hi + `,"logprobs":false}`, nil},
		{"modalities text", `{"model":"m","messages":` + hi + `,"modalities":["text"]}`, nil},
		{"unsupported fields JSON null", `{"model":"m","messages":` + hi + `,"n":null,"parallel_tool_calls":null,"logprobs":null,"top_logprobs":null,"audio":null,"modalities":null}`, nil},

		// model and messages.
		{"no model", `{"messages":` + hi + `}`, invalidValue("model", "The 'model' field is required.")},
		{"empty model", `{"model":"","messages":` + hi + `}`, invalidValue("model", "The 'model' field is required.")},
		{"no messages", `{"model":"m"}`, invalidValue("messages", "The 'messages' field is required and must hold at least one message.")},
		{"empty messages", `{"model":"m","messages":[]}`, invalidValue("messages", "The 'messages' field is required and must hold at least one message.")},
		{"null body", `null`, invalidValue("model", "The 'model' field is required.")},

		// stream_options and n.
		{"stream_options without stream", `{"model":"m","messages":` + hi + `,"stream_options":{"include_usage":true}}`,
			invalidValue("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")},
		{"stream_options with stream false", `{"model":"m","messages":` + hi + `,"stream":false,"stream_options":{}}`,
			invalidValue("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")},
		{"stream_options a string", `{"model":"m","messages":` + hi + `,"stream":true,"stream_options":"usage"}`,
			invalidValue("stream_options", "Invalid type for 'stream_options': expected an object, got JSON string.")},
		{"stream_options an array", `{"model":"m","messages":` + hi + `,"stream":true,"stream_options":[]}`,
			invalidValue("stream_options", "Invalid type for 'stream_options': expected an object, got JSON array.")},
		{"stream_options a number", `{"model":"m","messages":` + hi + `,"stream":true,"stream_options":1}`,
			invalidValue("stream_options", "Invalid type for 'stream_options': expected an object, got JSON number.")},
		{"include_usage a string", `{"model":"m","messages":` + hi + `,"stream":true,"stream_options":{"include_usage":"yes"}}`,
			invalidValue("stream_options.include_usage", "Invalid type for 'stream_options.include_usage': expected a boolean, got JSON string.")},
		{"n 2", `{"model":"m","messages":` + hi + `,"n":2}`, unsupported("n", "LaaS returns one choice per request; 'n' must be 1 or absent.")},
		{"n 0", `{"model":"m","messages":` + hi + `,"n":0}`, unsupported("n", "LaaS returns one choice per request; 'n' must be 1 or absent.")},

		// Tool and function calling.
		{"tools", `{"model":"m","messages":` + hi + `,"tools":[{"type":"function","function":{"name":"f"}}]}`,
			unsupported("tools", "LaaS does not support tool or function calling; remove 'tools'.")},
		{"empty tools array", `{"model":"m","messages":` + hi + `,"tools":[]}`,
			unsupported("tools", "LaaS does not support tool or function calling; remove 'tools'.")},
		{"tool_choice", `{"model":"m","messages":` + hi + `,"tool_choice":"none"}`,
			unsupported("tool_choice", "LaaS does not support tool or function calling; remove 'tool_choice'.")},
		{"functions", `{"model":"m","messages":` + hi + `,"functions":[{"name":"f"}]}`,
			unsupported("functions", "LaaS does not support tool or function calling; remove 'functions'.")},
		{"function_call", `{"model":"m","messages":` + hi + `,"function_call":"auto"}`,
			unsupported("function_call", "LaaS does not support tool or function calling; remove 'function_call'.")},
		{"parallel_tool_calls", `{"model":"m","messages":` + hi + `,"parallel_tool_calls":false}`,
			unsupported("parallel_tool_calls", "LaaS does not support tool or function calling; remove 'parallel_tool_calls'.")},
		{"logprobs true", `{"model":"m","messages":` + hi + `,"logprobs":true}`,
			unsupported("logprobs", "LaaS does not support log probabilities; remove 'logprobs' or set it to false.")},
		{"top_logprobs", `{"model":"m","messages":` + hi + `,"top_logprobs":0}`,
			unsupported("top_logprobs", "LaaS does not support log probabilities; remove 'top_logprobs'.")},
		{"audio", `{"model":"m","messages":` + hi + `,"audio":{"voice":"alloy","format":"mp3"}}`,
			unsupported("audio", "LaaS does not support audio output; remove 'audio'.")},
		{"modalities with audio", `{"model":"m","messages":` + hi + `,"modalities":["text","audio"]}`,
			unsupported("modalities", `LaaS does not support the 'audio' output modality; 'modalities' may hold only "text".`)},
		{"tool_calls on an assistant message", `{"model":"m","messages":[{"role":"user","content":"u"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function"}]}]}`,
			unsupported("messages[1].tool_calls", "messages[1] carries tool_calls; LaaS does not support tool calling.")},

		// Roles.
		{"empty role", `{"model":"m","messages":[{"content":"hi"}]}`,
			invalidValue("messages[0].role", "messages[0] has no 'role'; use system, user or assistant.")},
		{"tool role", `{"model":"m","messages":[{"role":"user","content":"u"},{"role":"tool","content":"r","tool_call_id":"c1"}]}`,
			invalidValue("messages[1].role", "messages[1] has role 'tool'; LaaS accepts only system, user and assistant messages.")},
		{"developer role", `{"model":"m","messages":[{"role":"developer","content":"d"}]}`,
			invalidValue("messages[0].role", "messages[0] has role 'developer'; LaaS accepts only system, user and assistant messages.")},
		{"function role", `{"model":"m","messages":[{"role":"function","name":"f","content":"r"}]}`,
			invalidValue("messages[0].role", "messages[0] has role 'function'; LaaS accepts only system, user and assistant messages.")},
		{"role is case sensitive", `{"model":"m","messages":[{"role":"User","content":"u"}]}`,
			invalidValue("messages[0].role", "messages[0] has role 'User'; LaaS accepts only system, user and assistant messages.")},

		// Parts.
		{"unknown part type", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"t"},{"type":"input_audio","input_audio":{}}]}]}`,
			invalidValue("messages[0].content[1].type", "messages[0].content[1] has type 'input_audio'; the bridge accepts text, image_url, document, file and input_file parts.")},
		{"part without type", `{"model":"m","messages":[{"role":"user","content":[{"text":"t"}]}]}`,
			invalidValue("messages[0].content[0].type", "messages[0].content[0] has type ''; the bridge accepts text, image_url, document, file and input_file parts.")},
		{"image_url missing", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`,
			invalidValue("messages[0].content[0].image_url", "messages[0].content[0] is an image_url part without a url.")},
		{"image_url without url", `{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"t"},{"type":"image_url","image_url":{"detail":"low"}}]}]}`,
			invalidValue("messages[1].content[1].image_url", "messages[1].content[1] is an image_url part without a url.")},
		{"image_url empty string", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":""}]}]}`,
			invalidValue("messages[0].content[0].image_url", "messages[0].content[0] is an image_url part without a url.")},
		{"document without document_url", `{"model":"m","messages":[{"role":"user","content":[{"type":"document"}]}]}`,
			invalidValue("messages[0].content[0].document_url", "messages[0].content[0] is a document part without a document_url.url.")},
		{"document with empty url", `{"model":"m","messages":[{"role":"user","content":[{"type":"document","document_url":{"url":""}}]}]}`,
			invalidValue("messages[0].content[0].document_url", "messages[0].content[0] is a document part without a document_url.url.")},
		{"document url under image_url", `{"model":"m","messages":[{"role":"user","content":[{"type":"document","image_url":{"url":"data:application/pdf;base64,AA"}}]}]}`,
			invalidValue("messages[0].content[0].document_url", "messages[0].content[0] is a document part without a document_url.url.")},
		{"file part without file", `{"model":"m","messages":[{"role":"user","content":[{"type":"file","file_data":"JVBE"}]}]}`,
			invalidValue("messages[0].content[0].file", `messages[0].content[0] is a file part without a file object; send {"file": {"file_data": "data:application/pdf;base64,..."}}.`)},
		{"file part with file_id only", `{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"file-abc"}}]}]}`,
			unsupported("messages[0].content[0].file.file_id", "messages[0].content[0] refers to an uploaded file by file_id; LaaS does not support file ids: send the PDF inline as file_data (base64).")},
		{"file part with an empty file", `{"model":"m","messages":[{"role":"user","content":[{"type":"file","file":{"filename":"a.pdf"}}]}]}`,
			invalidValue("messages[0].content[0].file.file_data", "messages[0].content[0] is a file part without file_data; send the PDF as base64 in file_data.")},
		{"input_file with file_id only", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_file","file_id":"file-abc"}]}]}`,
			unsupported("messages[0].content[0].file_id", "messages[0].content[0] refers to an uploaded file by file_id; LaaS does not support file ids: send the PDF inline as file_data (base64).")},
		{"input_file with file_url only", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"t"},{"type":"input_file","file_url":"https://x.test/a.pdf"}]}]}`,
			unsupported("messages[0].content[1].file_url", "messages[0].content[1] refers to a file by file_url; LaaS does not support file URLs: send the PDF inline as file_data (base64).")},
		{"input_file with id and url", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_file","file_id":"f","file_url":"https://x.test/a.pdf"}]}]}`,
			unsupported("messages[0].content[0].file_id", "messages[0].content[0] refers to an uploaded file by file_id; LaaS does not support file ids: send the PDF inline as file_data (base64).")},
		{"input_file empty", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_file","filename":"a.pdf"}]}]}`,
			invalidValue("messages[0].content[0].file_data", "messages[0].content[0] is a input_file part without file_data; send the PDF as base64 in file_data.")},

		// Params.
		{"params object value", `{"model":"m","messages":` + hi + `,"params":{"ok":"x","cfg":{"a":1}}}`,
			invalidValue("params.cfg", "params.cfg must be a string, number or boolean; LaaS template variables cannot hold objects or arrays.")},
		{"params array value", `{"model":"m","messages":` + hi + `,"params":{"tags":["a"]}}`,
			invalidValue("params.tags", "params.tags must be a string, number or boolean; LaaS template variables cannot hold objects or arrays.")},

		// Order: the first problem found wins.
		{"model before messages", `{}`, invalidValue("model", "The 'model' field is required.")},
		{"stream_options before n", `{"model":"m","messages":` + hi + `,"n":3,"stream_options":{}}`,
			invalidValue("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")},
		{"n before tools", `{"model":"m","messages":` + hi + `,"stream":true,"n":2,"tools":[{}]}`,
			unsupported("n", "LaaS returns one choice per request; 'n' must be 1 or absent.")},
		{"request fields before messages", `{"model":"m","messages":[{"role":"tool","content":"r"}],"tool_choice":"auto"}`,
			unsupported("tool_choice", "LaaS does not support tool or function calling; remove 'tool_choice'.")},
		{"first bad message", `{"model":"m","messages":[{"role":"user","content":"u"},{"role":"developer"},{"role":"tool"}]}`,
			invalidValue("messages[1].role", "messages[1] has role 'developer'; LaaS accepts only system, user and assistant messages.")},
		{"params in name order", `{"model":"m","messages":` + hi + `,"params":{"zeta":{},"beta":[],"alpha":"ok"}}`,
			invalidValue("params.beta", "params.beta must be a string, number or boolean; LaaS template variables cannot hold objects or arrays.")},
		{"n before tools and logprobs", `{"model":"m","messages":` + hi + `,"logprobs":true,"tools":[{}],"n":2}`,
			unsupported("n", "LaaS returns one choice per request; 'n' must be 1 or absent.")},
		{"tools before logprobs", `{"model":"m","messages":` + hi + `,"logprobs":true,"tools":[{}]}`,
			unsupported("tools", "LaaS does not support tool or function calling; remove 'tools'.")},
		{"messages before params", `{"model":"m","messages":[{"role":"tool"}],"params":{"cfg":{}}}`,
			invalidValue("messages[0].role", "messages[0] has role 'tool'; LaaS accepts only system, user and assistant messages.")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := schema.DecodeChatRequest([]byte(tc.body))
			if err != nil {
				t.Fatalf("DecodeChatRequest: %v", err)
			}
			wantError(t, req.Validate(), tc.want)
		})
	}
}
