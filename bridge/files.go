package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/batch"
	"github.com/laas-bridge/laas-bridge/schema"
)

// The Files API, for the Batch API: uploads with purpose "batch" (JSONL),
// and the batches' output and error files. Files live in the Object Store
// schema.BucketFiles.

// DefaultMaxFileBytes is Config.MaxFileBytes's default: OpenAI's limit for
// a batch input file.
const DefaultMaxFileBytes = schema.MaxBatchFileBytes

// multipartOverhead is what a multipart body may hold besides the file.
const multipartOverhead = 1 << 20

// uploadFile answers POST /v1/files: multipart with "file" and "purpose".
// The file streams into the store while its bytes and lines are counted;
// a file over the limits is removed again.
func (g *Gateway) uploadFile(c echo.Context) error {
	r := c.Request()
	limit := g.cfg.MaxFileBytes
	if r.ContentLength > limit+multipartOverhead {
		return fileTooLarge(limit)
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType)); mt != "multipart/form-data" {
		return schema.Invalid("", schema.CodeInvalidValue, "Upload a file as multipart/form-data with the fields 'file' and 'purpose'.")
	}
	r.Body = http.MaxBytesReader(c.Response(), &idleReader{r: r.Body, rc: http.NewResponseController(c.Response()), timeout: g.cfg.BodyReadTimeout}, limit+multipartOverhead)
	mr, err := r.MultipartReader()
	if err != nil {
		return schema.Invalid("", schema.CodeInvalidValue, "The body is not a valid multipart form: %v.", err)
	}
	up := &upload{g: g, id: batch.NewFileID(), owner: callerOf(c).Owner(), limit: limit}
	purpose, err := up.read(r.Context(), mr)
	if err != nil {
		up.cleanup(r.Context())
		return err
	}
	switch {
	case up.stored == nil:
		return schema.Invalid("file", schema.CodeInvalidValue, "The upload has no 'file' field.")
	case purpose != schema.PurposeBatch:
		up.cleanup(r.Context())
		return schema.Invalid("purpose", schema.CodeInvalidValue, "'purpose' must be \"batch\"; this bridge keeps files for the Batch API only, got %q.", purpose)
	case up.counted.Lines() == 0:
		up.cleanup(r.Context())
		return schema.Invalid("file", schema.CodeInvalidValue, "The file is empty; a batch input file holds one JSON request per line.")
	}
	up.stored.Bytes = up.counted.Bytes
	return c.JSON(http.StatusOK, up.stored)
}

// upload is one file being stored from a multipart form.
type upload struct {
	g       *Gateway
	id      string
	owner   string // the caller's keys.Caller.Owner
	limit   int64
	stored  *schema.FileObject // nil until the file part is stored
	counted *batch.LineCounter
}

// read reads the form's parts, storing the file part, and returns the
// purpose field.
func (u *upload) read(ctx context.Context, mr *multipart.Reader) (purpose string, err error) {
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return purpose, nil
		}
		if err != nil {
			if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return "", mbe
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return "", bodyTimedOut(u.g.cfg.BodyReadTimeout)
			}
			return "", schema.Invalid("", schema.CodeInvalidValue, "The body is not a valid multipart form: %v.", err)
		}
		switch part.FormName() {
		case "purpose":
			v, _ := io.ReadAll(io.LimitReader(part, 256))
			purpose = strings.TrimSpace(string(v))
		case "file":
			if u.stored != nil {
				return "", schema.Invalid("file", schema.CodeInvalidValue, "Send one 'file' per upload.")
			}
			if err := u.store(ctx, part); err != nil {
				return "", err
			}
		}
		_ = part.Close()
	}
}

// store puts the file part in the files bucket, counting its lines.
func (u *upload) store(ctx context.Context, part *multipart.Part) error {
	u.counted = batch.NewLineCounter(part, u.limit)
	filename := part.FileName()
	if filename == "" {
		filename = "upload.jsonl"
	}
	f, err := u.g.batches.PutFile(ctx, u.id, u.owner, filename, schema.PurposeBatch, 0, u.counted)
	if err == nil {
		u.stored = &f
		return nil
	}
	u.stored = &schema.FileObject{} // the store may hold a partial object: cleanup removes it
	switch {
	case u.counted.Over, errors.As(err, new(*http.MaxBytesError)):
		return fileTooLarge(u.limit)
	case errors.Is(err, context.Canceled):
		return clientGone(err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return bodyTimedOut(u.g.cfg.BodyReadTimeout)
	case u.counted.TooMany:
		return schema.Invalid("file", schema.CodeInvalidValue, "The file has more than %d lines; a batch holds at most %d requests.", schema.MaxBatchLines, schema.MaxBatchLines)
	}
	return batchStoreUnavailable(fmt.Errorf("store file %s: %w", u.id, err))
}

// idleReader moves the connection's read deadline timeout past each
// read: an upload (up to 200 MiB, which may take long on a slow link) is
// cut when its bytes stop arriving for timeout, never for its total time.
type idleReader struct {
	r       io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
}

func (i *idleReader) Read(p []byte) (int, error) {
	if err := i.rc.SetReadDeadline(time.Now().Add(i.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return 0, err
	}
	return i.r.Read(p)
}

func (i *idleReader) Close() error { return i.r.Close() }

// cleanup deletes what was stored of a refused upload.
func (u *upload) cleanup(ctx context.Context) {
	if u.stored == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = u.g.batches.DeleteFile(ctx, u.id)
}

func fileTooLarge(limit int64) *schema.Error {
	return &schema.Error{Status: http.StatusRequestEntityTooLarge, Type: schema.TypeInvalidRequest, Code: schema.CodeRequestTooLarge, Param: "file",
		Message: fmt.Sprintf("The file is larger than the %d bytes this bridge accepts for a batch.", limit)}
}

// ownFile returns file id when the caller sees it (keys.Caller.Sees):
// another's file is batch.ErrNotFound, as a missing one, so that its
// answer tells nothing of it.
func (g *Gateway) ownFile(c echo.Context, id string) (schema.FileObject, error) {
	f, err := g.batches.File(c.Request().Context(), id)
	if err == nil && !callerOf(c).Sees(f.CreatedBy) {
		return schema.FileObject{}, batch.ErrNotFound
	}
	return f, err
}

// getFile answers GET /v1/files/{id}.
func (g *Gateway) getFile(c echo.Context) error {
	f, err := g.ownFile(c, c.Param("id"))
	if err != nil {
		return g.fileError(c.Param("id"), err)
	}
	return c.JSON(http.StatusOK, f)
}

// listFiles answers GET /v1/files: the caller's files (every file for the
// admin), newest first (purpose filters by purpose).
func (g *Gateway) listFiles(c echo.Context) error {
	files, err := g.batches.Files(c.Request().Context())
	if err != nil {
		return batchStoreUnavailable(fmt.Errorf("list files: %w", err))
	}
	who, purpose := callerOf(c), c.QueryParam("purpose")
	out := schema.List[schema.FileObject]{Object: "list", Data: []schema.FileObject{}}
	for _, f := range files {
		if who.Sees(f.CreatedBy) && (purpose == "" || f.Purpose == purpose) {
			out.Data = append(out.Data, f)
		}
	}
	if n := len(out.Data); n > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[n-1].ID
	}
	return c.JSON(http.StatusOK, out)
}

// fileContent answers GET /v1/files/{id}/content with the file's bytes.
func (g *Gateway) fileContent(c echo.Context) error {
	id := c.Param("id")
	if _, err := g.ownFile(c, id); err != nil {
		return g.fileError(id, err)
	}
	obj, err := g.batches.OpenFile(c.Request().Context(), id)
	if err != nil {
		return g.fileError(id, err)
	}
	defer obj.Close()
	info, err := obj.Info()
	if err != nil {
		return g.fileError(id, err)
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/octet-stream")
	h.Set(echo.HeaderContentDisposition, mime.FormatMediaType("attachment", map[string]string{"filename": info.Metadata["filename"]}))
	// Read the first chunk before committing to 200: a store error then
	// still gets an error answer.
	first := make([]byte, 64<<10)
	n, err := io.ReadFull(obj, first)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return g.fileError(id, err)
	}
	return c.Stream(http.StatusOK, "application/octet-stream", io.MultiReader(bytes.NewReader(first[:n]), obj))
}

// deleteFile answers DELETE /v1/files/{id}.
func (g *Gateway) deleteFile(c echo.Context) error {
	id := c.Param("id")
	if _, err := g.ownFile(c, id); err != nil {
		return g.fileError(id, err)
	}
	if err := g.batches.DeleteFile(c.Request().Context(), id); err != nil {
		return g.fileError(id, err)
	}
	return c.JSON(http.StatusOK, schema.FileDeleted{ID: id, Object: "file", Deleted: true})
}

func (g *Gateway) fileError(id string, err error) error {
	if errors.Is(err, batch.ErrNotFound) {
		return &schema.Error{Status: http.StatusNotFound, Type: schema.TypeInvalidRequest, Code: "file_not_found", Param: "file_id",
			Message: fmt.Sprintf("No such File object: %s", id)}
	}
	if errors.Is(err, context.Canceled) {
		return clientGone(err)
	}
	return batchStoreUnavailable(fmt.Errorf("file %s: %w", id, err))
}
