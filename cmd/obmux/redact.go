package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/obmux/obmux/wsconn"
)

// redactHandler passes every log record through wsconn.RedactText: its
// message and every attribute that is a string, an error or a Stringer, so
// that no URL query (access_token) or userinfo (user:password@) reaches the
// log, whichever line logs it.
type redactHandler struct{ slog.Handler }

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, wsconn.RedactText(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redactAttr(a)
	}
	return redactHandler{h.Handler.WithAttrs(red)}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h.Handler.WithGroup(name)}
}

// redactAttr returns a with its value redacted; an error or a Stringer
// becomes its redacted text.
func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, wsconn.RedactText(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]slog.Attr, len(g))
		for i, ga := range g {
			red[i] = redactAttr(ga)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(red...)}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, wsconn.RedactText(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, wsconn.RedactText(x.String()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
