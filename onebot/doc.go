// Package onebot is the OneBot v11 vocabulary obmux speaks: it scans and
// classifies frames without decoding them (Scan, Classify), rewrites the
// echo of an API call (SetEcho), builds obmux's own frames (lifecycle and
// heartbeat meta events, failure responses), checks access tokens, and
// writes messages as an array of segments or a CQ-code string (EncodeCQ,
// DecodeCQ; ConvertEvent and ConvertResponse for whole frames).
//
// It reads only what obmux needs of a frame and never decodes one whole: the
// same bytes go on to every peer. It imports no other obmux package.
package onebot
