package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// screenshot, when set, is where TestStatusPageInBrowser saves its picture
// of the page (docs/status-page.png is made with
// `go test ./cmd/obmux -run TestStatusPageInBrowser -args -screenshot $PWD/docs/status-page.png`,
// with fonts-noto-cjk installed for the page's Chinese labels).
var screenshot = flag.String("screenshot", "", "TestStatusPageInBrowser saves a PNG of the status page here")

// chromium returns the path of a Chromium or Chrome binary. Without one the
// browser test skips, except in CI (CI=true), where .ci/run installs
// Debian's chromium and a missing browser is a failure.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH: .ci/run installs Debian's chromium before the tests")
	}
	t.Skip("no chromium on PATH (apt-get install chromium)")
	return ""
}

// browser starts headless Chromium for the test and returns a tab's context.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], // headless, disable-background-networking, ...
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1000, 800))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc() // waits for the browser to exit and removes its profile
	})
	return ctx
}

// card is a JavaScript expression for the status page's card of the target
// name.
func card(name string) string {
	return fmt.Sprintf(`document.querySelector('#target .card[data-name=%q]')`, name)
}

// The status page in a real browser: it lists both targets as connected,
// with the events they were written; after one target stops, the same page
// (not reloaded) shows it disconnected with its reason, the other still
// connected.
func TestStatusPageInBrowser(t *testing.T) {
	ctx := browser(t)
	up := newUpstream(t, "127.0.0.1:0")
	nb, koishi := newTarget(t), newTarget(t)
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_NONEBOT_URL="+nb.URL,
		"OBMUX_TARGET_KOISHI_URL="+koishi.URL+"?access_token=hunter2")
	up.connected()
	pn, pk := nb.accept(), koishi.accept()
	for i := range 3 {
		up.send(event(i))
	}
	for range 3 {
		nextEvent(t, pn)
		nextEvent(t, pk)
	}
	if err := pn.Send(ctxT(t), []byte(`{"action":"send_msg","params":{"user_id":20002,"message":"hi"},"echo":"e1"}`)); err != nil {
		t.Fatal(err)
	}
	if r := nextEvent(t, pn); !strings.Contains(string(r), `"echo":"e1"`) || !strings.Contains(string(r), `"status":"ok"`) {
		t.Fatalf("send_msg answer: %s", r)
	}

	page := "http://" + in.addrs.Metrics + "/"
	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		t.Fatal(err)
	}
	// A mark that a reload would wipe.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.obmuxTestMark = true`)); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "both targets connected, nonebot with 3 events and an API call",
		card("nonebot")+`?.dataset.state === "connected" && `+card("koishi")+`?.dataset.state === "connected" && `+
			card("nonebot")+`.textContent.includes("3 (") && `+card("nonebot")+`.textContent.includes("1 / 0 / 0") && `+
			`document.querySelector('#acct')?.dataset.state === "online"`)

	koishi.Close()
	eventually(t, "koishi disconnected on /status", func() bool {
		for _, c := range in.status().Connections {
			if c.Name == "koishi" {
				return !c.Connected && c.LastReason != ""
			}
		}
		return false
	})
	var reason string
	for _, c := range in.status().Connections {
		if c.Name == "koishi" {
			reason = c.LastReason
		}
	}
	waitFor(ctx, t, "koishi disconnected with its reason "+reason+", nonebot connected, no reload",
		fmt.Sprintf(`window.obmuxTestMark === true && %s.dataset.state === "disconnected" && %s.querySelector('.why')?.textContent.includes(%q) && %s.dataset.state === "connected"`,
			card("koishi"), card("koishi"), reason, card("nonebot")))
	html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerHTML`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(html, "hunter2") {
		t.Error("the page shows the target URL's access_token")
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if *screenshot != "" {
		if err := os.WriteFile(*screenshot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// waitFor waits until the JavaScript expression cond is true in the page.
func waitFor(ctx context.Context, t *testing.T, what, cond string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(wait),
		chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("page: waiting for %s: %v\npage text:\n%s", what, err, body)
	}
}
