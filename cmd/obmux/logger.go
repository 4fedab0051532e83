package main

import (
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"
	"golang.org/x/term"

	"github.com/obmux/obmux/config"
)

// newLogger builds the logger: tint text on a terminal (auto) or when asked,
// JSON otherwise; every line is redacted (redactHandler). Text is coloured
// only on a terminal (tint does not look); empty attributes (a nil error, an
// empty hint) are left out, and durations are written as Go durations
// ("10s"), in JSON too.
func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	terminal := false
	if f, ok := w.(*os.File); ok {
		terminal = term.IsTerminal(int(f.Fd())) // tint does not look itself
	}
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if terminal {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(redactHandler{tint.NewTextHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly,
			NoColor: !terminal, ReplaceAttr: replaceAttr})})
	}
	return slog.New(redactHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: replaceAttr})})
}

// replaceAttr drops attributes that say nothing (nil, "") and writes
// durations as strings.
func replaceAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 {
		switch a.Key {
		case slog.TimeKey, slog.LevelKey, slog.MessageKey, slog.SourceKey:
			return a
		}
	}
	switch v := a.Value; v.Kind() {
	case slog.KindAny:
		if v.Any() == nil {
			return slog.Attr{}
		}
	case slog.KindString:
		if v.String() == "" {
			return slog.Attr{}
		}
	case slog.KindDuration:
		return slog.String(a.Key, v.Duration().String())
	}
	return a
}
