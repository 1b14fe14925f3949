package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/sbps-marshal/sbps-marshal/agent"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/ims"
	"github.com/sbps-marshal/sbps-marshal/internal/tlsconf"
	"github.com/sbps-marshal/sbps-marshal/svid"
)

// checkIMS yields the SPIFFE and IMS rows: a JWT-SVID from the source
// SPIFFE_SOURCE chooses, then one authenticated listing of IMS's images
// through the agent's IMS client.
func checkIMS(ctx context.Context, cfg *config.Config, o Options) []Result {
	spiffe, got := boundedWith(ctx, o.Timeout, RowSPIFFE, "the SPIRE agent does not answer: systemctl status spire-agent (socket "+cfg.SpireAgentSock+")",
		func(ctx context.Context) (Result, [2]string) {
			r, id, source := spiffeRow(ctx, cfg, o)
			return r, [2]string{id, source}
		})
	id, source := got[0], got[1]
	var imsRow Result
	if cfg.IMSAuth == "spiffe" && spiffe.Status == Fail {
		imsRow = skipped(RowIMS, RowSPIFFE, "no JWT-SVID to present")
	} else {
		imsRow = bounded(ctx, o.Timeout+time.Second, RowIMS, "IMS does not answer: check "+cfg.APIGateway+" and IMS (kubectl -n services get pods -l app.kubernetes.io/name=cray-ims)",
			func(ctx context.Context) Result { return imsListRow(ctx, cfg, o, id, source) })
	}
	return []Result{spiffe, imsRow}
}

// spiffeRow gets the JWT-SVID for IMS as the agent does (agent.JWTConfig
// and svid.JWTSource); it returns the row, the SVID's SPIFFE ID and the
// source that gave it (cli or workload-api).
func spiffeRow(ctx context.Context, cfg *config.Config, o Options) (_ Result, id, source string) {
	r := Result{Name: RowSPIFFE}
	if cfg.IMSAuth != "spiffe" {
		r.Status, r.Detail = OK, "no JWT-SVID used (IMS_AUTH="+cfg.IMSAuth+")"
		if cfg.NATSSPIFFE && len(cfg.NATSURL) > 0 {
			r.Detail += "; the X.509-SVID for NATS_SPIFFE is checked with NATS"
		}
		return r, "", ""
	}
	source, why, err := svid.Resolve(cfg.SPIFFESource, cfg.SpireAgentPath)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, errText(err), setKey(cfg, "SPIFFE_SOURCE", "auto")
		return r, "", ""
	}
	link := "ln /usr/bin/spire-agent " + orDefault(cfg.SpireAgentPath, svid.DefaultAgentPath)
	registered := "spiffe://shasta/ncn/workload/sbps-marshal is issued only to the hard link of spire-agent at " + orDefault(cfg.SpireAgentPath, svid.DefaultAgentPath) + " (SPIRE_AGENT_PATH, selector unix:path, as cray-spire registers it)"
	if source == svid.SourceCLI {
		if _, err := statExec(cfg.SpireAgentPath); err != nil {
			r.Status = Fail
			r.Detail = fmt.Sprintf("SPIFFE_SOURCE=%s: the SPIRE agent CLI %s: %s", cfg.SPIFFESource, cfg.SpireAgentPath, err)
			r.Fix = registered + ": create it (" + link + "), or " + setKey(cfg, "SPIRE_AGENT_PATH", "<path of that hard link>")
			return r, "", ""
		}
	}
	jc, err := agent.JWTConfig(cfg, o.Logger)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, errText(err), setKey(cfg, "SPIFFE_SOURCE", "auto")
		return r, "", ""
	}
	jc.FetchTimeout = o.Timeout
	src := svid.NewJWTSource(jc)
	token, err := src.Token(ctx)
	if err != nil {
		r.Status = Fail
		r.Detail = fmt.Sprintf("no JWT-SVID for audience %s from %s (%s): %s", cfg.SpireJWTAudience, source, why, errText(err))
		if source == svid.SourceCLI {
			r.Fix = fmt.Sprintf("check that the SPIRE agent runs (socket %s, SPIRE_AGENT_SOCK_PATH) and that %s", cfg.SpireAgentSock, registered)
		} else {
			r.Fix = fmt.Sprintf("%s: create it (%s) so that SPIFFE_SOURCE=auto runs it, or register this binary's path in SPIRE; check that the SPIRE agent runs (socket %s, SPIRE_AGENT_SOCK_PATH)", registered, link, cfg.SpireAgentSock)
		}
		return r, "", ""
	}
	id = "a JWT-SVID"
	detail := ""
	if sv, err := jwtsvid.ParseInsecure(token, []string{cfg.SpireJWTAudience}); err == nil {
		id = sv.ID.String()
		detail = fmt.Sprintf(", expires in %s", time.Until(sv.Expiry).Round(time.Second))
	}
	r.Status = OK
	r.Detail = fmt.Sprintf("JWT-SVID %s for audience %s%s, from %s: %s", id, cfg.SpireJWTAudience, detail, source, why)
	return r, id, source
}

// imsListRow lists IMS's images once through the client the agent builds
// (agent.NewIMSClient: API_GATEWAY, IMS_URI, IMS_AUTH, TLS, IMS_TIMEOUT).
func imsListRow(ctx context.Context, cfg *config.Config, o Options, id, source string) Result {
	r := Result{Name: RowIMS}
	url := cfg.APIGateway + "/" + cfg.IMSURI
	client, err := agent.NewIMSClient(cfg, o.Logger)
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, errText(err), "check SBPS_MARSHAL_API_GATEWAY, SBPS_MARSHAL_IMS_URI and SBPS_MARSHAL_IMS_AUTH in "+envFile(cfg)
		return r
	}
	as := id + " from " + source
	switch cfg.IMSAuth {
	case "token-file":
		as = "the token in " + cfg.IMSTokenFile
	case "none":
		as = "no credentials (IMS_AUTH=none)"
	}
	l, err := client.List(ctx)
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("GET %s as %s: %s", url, as, errText(err))
		var ve *tlsconf.VerifyError
		var se *ims.StatusError
		switch {
		case errors.As(err, &ve):
			r.Fix = ve.Fix
		case errors.Is(err, ims.ErrUnauthorized) && cfg.IMSAuth == "token-file":
			r.Fix = "IMS refused the token: put a valid one into " + cfg.IMSTokenFile + " (IMS_TOKEN_FILE)"
		case errors.Is(err, ims.ErrUnauthorized):
			r.Fix = fmt.Sprintf("IMS refused the JWT-SVID: the API gateway must accept %s for audience %s; check SBPS_MARSHAL_SPIRE_JWT_AUDIENCE (CSM: system-compute) in %s and the gateway's policy for the sbps-marshal SPIFFE ID", orDefault(id, "the SVID"), cfg.SpireJWTAudience, envFile(cfg))
		case errors.Is(err, ims.ErrNoRoute):
			r.Fix = "the API gateway has no route to IMS (IMS redeploying?): check IMS (kubectl -n services get pods -l app.kubernetes.io/name=cray-ims) and SBPS_MARSHAL_IMS_URI (" + cfg.IMSURI + ")"
		case errors.As(err, &se) && se.Status >= http.StatusInternalServerError:
			r.Fix = "IMS or the API gateway is failing: check IMS (kubectl -n services get pods -l app.kubernetes.io/name=cray-ims) and the gateway"
		case errors.As(err, &se):
			r.Fix = "check SBPS_MARSHAL_API_GATEWAY and SBPS_MARSHAL_IMS_URI (" + url + ") in " + envFile(cfg)
		default:
			r.Fix = fmt.Sprintf("check that the API gateway answers at %s (SBPS_MARSHAL_API_GATEWAY in %s): DNS, routing, the gateway", cfg.APIGateway, envFile(cfg))
		}
		return r
	}
	projectable := 0
	for _, img := range l.Images {
		if ok, _ := ims.Projectable(img, cfg.IMSTagging); ok {
			projectable++
		}
	}
	r.Status = OK
	r.Detail = fmt.Sprintf("GET %s as %s: %d images, %d to project (IMS_TAGGING=%t)", url, as, len(l.Images), projectable, cfg.IMSTagging)
	if len(l.Errors) > 0 {
		r.Status = Warn
		r.Detail += fmt.Sprintf("; %d records do not decode (their projections are kept, not removed)", len(l.Errors))
		var ids []string
		for _, e := range l.Errors {
			ids = append(ids, fmt.Sprintf("#%d %s: %v", e.Index, e.ID, e.Err))
		}
		r.Fix = "repair these IMS records: " + strings.Join(ids, "; ")
	}
	return r
}
