module github.com/obmux/obmux/interop

go 1.26

require (
	github.com/coder/websocket v1.8.15
	github.com/sirupsen/logrus v1.9.3
	github.com/wdvxdr1123/ZeroBot v1.8.2
	go.uber.org/goleak v1.3.0
)

require (
	github.com/FloatTech/ttl v0.0.0-20250224045156-012b1463287d // indirect
	github.com/RomiChan/syncx v0.0.0-20240418144900-b7402ffdebc7 // indirect
	github.com/RomiChan/websocket v1.4.3-0.20251002072000-d3eb41798438 // indirect
	github.com/fumiama/orbyte v0.0.0-20251002065953-3bb358367eb5 // indirect
	github.com/tidwall/gjson v1.18.0 // indirect
	github.com/tidwall/match v1.1.1 // indirect
	github.com/tidwall/pretty v1.2.0 // indirect
	golang.org/x/net v0.26.0 // indirect
	golang.org/x/sys v0.21.0 // indirect
)
