// Package s3 is the S3-compatible storage.Backend (minio-go/v7), vigil's
// production choice.
//
// Memory: an object of at most Config.PartSize bytes (16 MiB by default)
// goes out as one streaming PUT with a known Content-Length, so the body
// is never buffered whole; a larger one is a multipart upload that holds
// one part (PartSize bytes) in memory at a time.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"maps"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/vigilcloud/vigil/storage"
)

var _ storage.Backend = (*Backend)(nil)

const (
	// DefaultPartSize is the multipart threshold and the buffer a large
	// upload holds; segments are far smaller and stream in one PUT.
	DefaultPartSize = 16 << 20
	// DefaultMaxRetries keeps an outage visible quickly: a request is
	// retried at most this many times (only when its body can be replayed).
	DefaultMaxRetries = 3
	// deleteBatch is S3's limit for one multi-object delete.
	deleteBatch = 1000
	// listPage is S3's largest page.
	listPage = 1000
)

var metaKeyPattern = regexp.MustCompile(`^[a-z0-9-]+$`)

// Config locates a bucket.
type Config struct {
	// Endpoint is a URL: http://host:port or https://host.
	Endpoint  string
	Bucket    string
	AccessKey string
	SecretKey string
	Region    string
	// Prefix, when set, is prepended to every key so that several stores
	// can share a bucket; List strips it again.
	Prefix string
	// PartSize is the multipart threshold and part size (default 16 MiB).
	PartSize uint64
	// MaxRetries bounds retries of replayable requests (default 3).
	MaxRetries int
	// DialTimeout bounds connecting to the endpoint (default 5s).
	DialTimeout time.Duration
}

// Backend stores objects in one bucket. Safe for concurrent use.
type Backend struct {
	client   *minio.Client
	core     minio.Core
	bucket   string
	prefix   string
	partSize uint64
}

// New connects to the endpoint and creates the bucket if it is missing.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("s3: endpoint %q: want http://host[:port] or https://host[:port]", cfg.Endpoint)
	}
	if cfg.Bucket == "" {
		return nil, errors.New("s3: no bucket configured")
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = DefaultMaxRetries
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	tr, err := minio.DefaultTransport(u.Scheme == "https")
	if err != nil {
		return nil, fmt.Errorf("s3: transport: %w", err)
	}
	tr.DialContext = (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.MaxIdleConnsPerHost = 256
	client, err := minio.New(u.Host, &minio.Options{
		Creds:      credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:     u.Scheme == "https",
		Region:     cfg.Region,
		Transport:  tr,
		MaxRetries: cfg.MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: client: %w", err)
	}
	b := &Backend{
		client:   client,
		core:     minio.Core{Client: client},
		bucket:   cfg.Bucket,
		prefix:   cfg.Prefix,
		partSize: cfg.PartSize,
	}
	if err := b.ensureBucket(ctx, cfg.Region); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Backend) ensureBucket(ctx context.Context, region string) error {
	ok, err := b.client.BucketExists(ctx, b.bucket)
	if err != nil {
		return fmt.Errorf("s3: bucket %s: %w", b.bucket, classify(err))
	}
	if ok {
		return nil
	}
	err = b.client.MakeBucket(ctx, b.bucket, minio.MakeBucketOptions{Region: region})
	if err != nil {
		// Another node may have created it meanwhile.
		code := minio.ToErrorResponse(err).Code
		if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			return nil
		}
		return fmt.Errorf("s3: create bucket %s: %w", b.bucket, classify(err))
	}
	return nil
}

// Client returns the underlying minio-go client (for benchmarks).
func (b *Backend) Client() *minio.Client { return b.client }

// Bucket returns the bucket name.
func (b *Backend) Bucket() string { return b.bucket }

// checkKey rejects keys that the fs backend rejects too, so that both
// backends accept the same key space.
func checkKey(key string) error {
	if key == "" {
		return errors.New("empty key")
	}
	if strings.IndexByte(key, 0) >= 0 {
		return errors.New("key contains NUL")
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("key has an invalid segment %q", seg)
		}
	}
	return nil
}

// Put implements storage.Backend. With IfAbsent it sends If-None-Match: *
// and maps the server's 412 to storage.ErrExists.
func (b *Backend) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) (storage.ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("s3: put %s: %w", key, err)
	}
	if size < 0 {
		return storage.ObjectInfo{}, fmt.Errorf("s3: put %s: negative size %d", key, size)
	}
	for k := range opts.Metadata {
		if !metaKeyPattern.MatchString(k) {
			return storage.ObjectInfo{}, fmt.Errorf("s3: put %s: invalid metadata key %q (want [a-z0-9-]+)", key, k)
		}
	}
	ct := opts.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	// No SHA-256 payload signing: it would hash every byte a second time
	// (ingest already hashes and verifies the body). minio-go then sends a
	// CRC32C trailer that the server verifies, so the transfer stays checked.
	po := minio.PutObjectOptions{
		ContentType:          ct,
		UserMetadata:         opts.Metadata,
		PartSize:             b.partSize,
		DisableContentSha256: true,
	}
	if opts.IfAbsent {
		po.SetMatchETagExcept("*")
	}
	body := &exactReader{r: r, left: size}
	up, err := b.client.PutObject(ctx, b.bucket, b.prefix+key, body, size, po)
	if err != nil {
		// The body's own failure explains the request's failure best.
		if body.err != nil {
			return storage.ObjectInfo{}, fmt.Errorf("s3: put %s: %w", key, body.err)
		}
		if isPrecondition(err) {
			return storage.ObjectInfo{}, fmt.Errorf("s3: put %s: %w", key, storage.ErrExists)
		}
		return storage.ObjectInfo{}, fmt.Errorf("s3: put %s: %w", key, classify(err))
	}
	mod := up.LastModified
	if mod.IsZero() {
		mod = time.Now()
	}
	return storage.ObjectInfo{
		Key:         key,
		Size:        up.Size,
		ModTime:     mod,
		ContentType: ct,
		Metadata:    maps.Clone(opts.Metadata),
	}, nil
}

func isPrecondition(err error) bool {
	resp := minio.ToErrorResponse(err)
	return resp.StatusCode == http.StatusPreconditionFailed || resp.Code == "PreconditionFailed"
}

// exactReader yields exactly left bytes of r and remembers why it failed,
// so a short or failing body aborts the upload and is reported as such.
type exactReader struct {
	r    io.Reader
	left int64
	err  error
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case err == io.EOF && e.left > 0:
		e.err = fmt.Errorf("body ended %d bytes early: %w", e.left, io.ErrUnexpectedEOF)
		return n, e.err
	case err == io.EOF:
		return n, io.EOF
	case err != nil:
		e.err = fmt.Errorf("read body: %w", err)
		return n, e.err
	}
	return n, nil
}

// Get implements storage.Backend with one ranged GET. An offset past the
// end is an error; an offset at the end yields an empty body.
func (b *Backend) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, storage.ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return nil, storage.ObjectInfo{}, fmt.Errorf("s3: get %s: %w", key, err)
	}
	if offset < 0 {
		return nil, storage.ObjectInfo{}, fmt.Errorf("s3: get %s: negative offset %d", key, offset)
	}
	if length == 0 {
		info, err := b.Stat(ctx, key)
		if err != nil {
			return nil, storage.ObjectInfo{}, err
		}
		if offset > info.Size {
			return nil, storage.ObjectInfo{}, fmt.Errorf("s3: get %s: offset %d outside object of %d bytes", key, offset, info.Size)
		}
		return io.NopCloser(strings.NewReader("")), info, nil
	}
	var opts minio.GetObjectOptions
	switch {
	case length > 0:
		_ = opts.SetRange(offset, offset+length-1)
	case offset > 0:
		_ = opts.SetRange(offset, 0)
	}
	rc, oi, hdr, err := b.core.GetObject(ctx, b.bucket, b.prefix+key, opts)
	if err != nil {
		if minio.ToErrorResponse(err).Code == "InvalidRange" {
			// S3 refuses a range starting at the end; we allow it.
			info, serr := b.Stat(ctx, key)
			if serr != nil {
				return nil, storage.ObjectInfo{}, serr
			}
			if offset == info.Size {
				return io.NopCloser(strings.NewReader("")), info, nil
			}
			return nil, storage.ObjectInfo{}, fmt.Errorf("s3: get %s: offset %d outside object of %d bytes", key, offset, info.Size)
		}
		return nil, storage.ObjectInfo{}, fmt.Errorf("s3: get %s: %w", key, b.mapErr(err))
	}
	info := b.info(key, oi)
	// A ranged response's Content-Length is the range; the object's size
	// is after the slash of Content-Range.
	if cr := hdr.Get("Content-Range"); cr != "" {
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			if n, perr := strconv.ParseInt(cr[i+1:], 10, 64); perr == nil {
				info.Size = n
			}
		}
	}
	return rc, info, nil
}

// Stat implements storage.Backend.
func (b *Backend) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("s3: stat %s: %w", key, err)
	}
	oi, err := b.client.StatObject(ctx, b.bucket, b.prefix+key, minio.StatObjectOptions{})
	if err != nil {
		return storage.ObjectInfo{}, fmt.Errorf("s3: stat %s: %w", key, b.mapErr(err))
	}
	return b.info(key, oi), nil
}

func (b *Backend) info(key string, oi minio.ObjectInfo) storage.ObjectInfo {
	var md map[string]string
	if len(oi.UserMetadata) > 0 {
		md = make(map[string]string, len(oi.UserMetadata))
		for k, v := range oi.UserMetadata {
			// minio-go canonicalises header names ("Duration-Ms", at times
			// with the X-Amz-Meta- prefix); keys were written lower-case.
			k = strings.ToLower(k)
			k = strings.TrimPrefix(k, "x-amz-meta-")
			md[k] = v
		}
	}
	return storage.ObjectInfo{
		Key:         key,
		Size:        oi.Size,
		ModTime:     oi.LastModified,
		ContentType: oi.ContentType,
		Metadata:    md,
	}
}

// mapErr turns a missing key into fs.ErrNotExist and marks outages.
func (b *Backend) mapErr(err error) error {
	resp := minio.ToErrorResponse(err)
	if resp.Code == "NoSuchKey" || (resp.StatusCode == http.StatusNotFound && resp.Code != "NoSuchBucket") {
		return fmt.Errorf("%w: %w", iofs.ErrNotExist, err)
	}
	return classify(err)
}

// List implements storage.Backend.
func (b *Backend) List(ctx context.Context, prefix, after string, limit int) ([]storage.ObjectInfo, error) {
	if limit <= 0 {
		return nil, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing once limit is reached
	opts := minio.ListObjectsOptions{
		Prefix:    b.prefix + prefix,
		Recursive: true,
		MaxKeys:   min(limit, listPage),
	}
	if after != "" {
		opts.StartAfter = b.prefix + after
	}
	out := make([]storage.ObjectInfo, 0, min(limit, listPage))
	for oi := range b.client.ListObjectsIter(ctx, b.bucket, opts) {
		if oi.Err != nil {
			return nil, fmt.Errorf("s3: list %s: %w", prefix, classify(oi.Err))
		}
		key := strings.TrimPrefix(oi.Key, b.prefix)
		if key <= after {
			continue
		}
		out = append(out, storage.ObjectInfo{Key: key, Size: oi.Size, ModTime: oi.LastModified})
		if len(out) >= limit {
			break
		}
	}
	return out, nil
}

// Delete implements storage.Backend: one multi-object delete per 1,000
// keys. Every key that failed is reported.
func (b *Backend) Delete(ctx context.Context, keys []string) error {
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return fmt.Errorf("s3: delete %s: %w", k, err)
		}
	}
	var errs []error
	for start := 0; start < len(keys); start += deleteBatch {
		batch := keys[start:min(start+deleteBatch, len(keys))]
		ch := make(chan minio.ObjectInfo, len(batch))
		for _, k := range batch {
			ch <- minio.ObjectInfo{Key: b.prefix + k}
		}
		close(ch)
		for rerr := range b.client.RemoveObjects(ctx, b.bucket, ch, minio.RemoveObjectsOptions{}) {
			if rerr.Err == nil || minio.ToErrorResponse(rerr.Err).Code == "NoSuchKey" {
				continue
			}
			key := strings.TrimPrefix(rerr.ObjectName, b.prefix)
			errs = append(errs, fmt.Errorf("s3: delete %s: %w", key, classify(rerr.Err)))
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("s3: delete: %w", err))
			break
		}
	}
	return errors.Join(errs...)
}

// Ping implements storage.Backend: the bucket must exist and answer.
func (b *Backend) Ping(ctx context.Context) error {
	ok, err := b.client.BucketExists(ctx, b.bucket)
	if err != nil {
		return fmt.Errorf("s3: ping %s: %w", b.bucket, classify(err))
	}
	if !ok {
		return fmt.Errorf("s3: ping: bucket %s does not exist", b.bucket)
	}
	return nil
}

// unavailableCodes are S3 error codes that mean "try again later".
var unavailableCodes = map[string]bool{
	"SlowDown":                   true,
	"ServiceUnavailable":         true,
	"InternalError":              true,
	"RequestTimeout":             true,
	"XMinioServerNotInitialized": true,
	"XMinioStorageFull":          true,
	"XMinioReadQuorum":           true,
	"XMinioWriteQuorum":          true,
	"XMinioBackendDown":          true,
}

// classify wraps network failures, timeouts and server-side outages with
// storage.ErrUnavailable; anything else (a bad request) is returned as is.
func classify(err error) error {
	if err == nil || errors.Is(err, storage.ErrUnavailable) {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	unavailable := false
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var urlErr *url.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &opErr), errors.As(err, &dnsErr),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		unavailable = true
	case errors.As(err, &urlErr) && urlErr.Timeout():
		unavailable = true
	default:
		resp := minio.ToErrorResponse(err)
		if resp.StatusCode >= 500 || unavailableCodes[resp.Code] {
			unavailable = true
		}
	}
	if unavailable {
		return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
	}
	return err
}
