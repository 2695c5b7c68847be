package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

func runIndex(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const synopsis = "index rebuild [--server URL] [--stream ID] [--data DIR]"
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintf(stdout, "usage: vigil %s\n\nAsks a running node to rebuild its recording index from storage alone.\n`vigil index rebuild --help` lists the flags.\n", synopsis)
		return flag.ErrHelp
	}
	if len(args) == 0 || args[0] != "rebuild" {
		return errors.New("usage: vigil " + synopsis)
	}
	fset := newFlagSet("index rebuild", synopsis, `Asks the node at --server to rebuild its recording index (every stream, or
--stream) from the manifests and segment objects in storage. The operator token
comes from VIGIL_ADMIN_TOKEN or DATA/admin-token.`, stdout, stderr)
	server := fset.String("server", "http://127.0.0.1:8080", "the node whose index to rebuild")
	stream := fset.String("stream", "", "rebuild only this stream")
	data := fset.String("data", "./vigil-data", "data directory of the node (for its admin token)")
	if err := parseFlags(fset, args[1:]); err != nil {
		return err
	}
	token := os.Getenv("VIGIL_ADMIN_TOKEN")
	if token == "" {
		b, err := os.ReadFile(filepath.Join(*data, "admin-token"))
		if err != nil {
			return fmt.Errorf("no VIGIL_ADMIN_TOKEN and %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	path := "/v1/index/rebuild"
	if *stream != "" {
		path += "?stream=" + url.QueryEscape(*stream)
	}
	c := &apiClient{base: strings.TrimRight(*server, "/"), token: token}
	var out map[string]any
	if err := c.do(ctx, "POST", path, nil, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rebuilt the index of %v stream(s) from storage in %v ms\n", out["streams"], out["took_ms"])
	return nil
}
