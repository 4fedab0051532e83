package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/obmux/obmux/config"
)

var errUnhealthy = errors.New("not ready")

// healthcheck asks /readyz on OBMUX_METRICS_LISTEN and fails unless it
// answers 200, so a distroless image can have a HEALTHCHECK without curl.
func healthcheck(ctx context.Context, environ []string, stdout io.Writer) error {
	cfg, err := config.Load(environ)
	if err != nil {
		return err
	}
	host, port, _ := net.SplitHostPort(cfg.MetricsListen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(stdout, "unhealthy:", err)
		return errUnhealthy
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stdout, "unhealthy: /readyz answered", resp.Status)
		return errUnhealthy
	}
	fmt.Fprintln(stdout, "ready")
	return nil
}
