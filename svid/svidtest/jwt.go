package svidtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// jwtAlgorithm is the JWS algorithm of every JWT-SVID (SPIRE's default key
// type is EC P-256).
const jwtAlgorithm = jose.ES256

func (s *Server) initJWT() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate JWT signing key: %w", err)
	}
	kidBytes := make([]byte, 16)
	if _, err := rand.Read(kidBytes); err != nil {
		return fmt.Errorf("generate key id: %w", err)
	}
	kid := hex.EncodeToString(kidBytes)
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jwtAlgorithm, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return fmt.Errorf("make JWT signer: %w", err)
	}
	s.jwtKey, s.kid, s.signer = key, kid, signer
	return nil
}

// MintJWT signs a JWT-SVID for id and audience that is issued now and
// expires after ttl (negative for an already expired token). It bypasses the
// Workload API and its counters; use it to craft tokens for negative tests.
func (s *Server) MintJWT(id string, audience []string, ttl time.Duration) (string, error) {
	return s.mintJWT(id, audience, ttl)
}

func (s *Server) mintJWT(id string, audience []string, ttl time.Duration) (string, error) {
	now := s.now()
	claims := jwt.Claims{
		Subject:  id,
		Audience: jwt.Audience(audience),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(ttl)),
	}
	tok, err := jwt.Signed(s.signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign JWT-SVID for %s: %w", id, err)
	}
	return tok, nil
}

// JWKS is the server's JWT bundle as a JSON Web Key Set, the document a
// gateway fetches to verify JWT-SVIDs.
func (s *Server) JWKS() []byte {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key:       &s.jwtKey.PublicKey,
		KeyID:     s.kid,
		Algorithm: string(jwtAlgorithm),
		Use:       "jwt-svid",
	}}}
	b, err := json.Marshal(set)
	if err != nil {
		// A P-256 public key always marshals; failing here is a bug.
		panic("svidtest: marshal JWKS: " + err.Error())
	}
	return b
}

// VerifyJWT checks a JWT-SVID the way an API gateway does: the signature
// against the server's JWT bundle (by kid), the audience, the expiry (with no
// leeway, by the server's clock) and a subject that is a SPIFFE ID in the
// trust domain. It returns the subject.
func (s *Server) VerifyJWT(token, audience string) (spiffeid.ID, error) {
	id, _, err := s.verifyJWT(token, audience)
	return id, err
}

// verifyJWT is VerifyJWT that also returns every claim of the token.
func (s *Server) verifyJWT(token, audience string) (spiffeid.ID, map[string]any, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jwtAlgorithm})
	if err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("JWT-SVID is malformed or not %s-signed: %w", jwtAlgorithm, err)
	}
	if len(tok.Headers) != 1 {
		return spiffeid.ID{}, nil, errors.New("JWT-SVID must have exactly one signature")
	}
	if kid := tok.Headers[0].KeyID; kid != s.kid {
		return spiffeid.ID{}, nil, fmt.Errorf("JWT-SVID key id %q is not in the trust bundle of %q", kid, s.td.Name())
	}
	var claims jwt.Claims
	all := map[string]any{}
	if err := tok.Claims(&s.jwtKey.PublicKey, &claims, &all); err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("JWT-SVID signature does not verify: %w", err)
	}
	if audience == "" {
		return spiffeid.ID{}, nil, errors.New("no audience to check the JWT-SVID against")
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{
		AnyAudience: jwt.Audience{audience},
		Time:        s.now(),
	}, 0); err != nil {
		if errors.Is(err, jwt.ErrInvalidAudience) {
			return spiffeid.ID{}, nil, fmt.Errorf("JWT-SVID audience %q does not include %q: %w", []string(claims.Audience), audience, err)
		}
		return spiffeid.ID{}, nil, fmt.Errorf("JWT-SVID claims rejected: %w", err)
	}
	if claims.Expiry == nil {
		return spiffeid.ID{}, nil, errors.New("JWT-SVID has no exp claim")
	}
	id, err := spiffeid.FromString(claims.Subject)
	if err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("JWT-SVID subject %q is not a SPIFFE ID: %w", claims.Subject, err)
	}
	if !id.MemberOf(s.td) {
		return spiffeid.ID{}, nil, fmt.Errorf("JWT-SVID subject %q is outside trust domain %q", id, s.td.Name())
	}
	return id, all, nil
}

// Verifier returns a bearer-token check for audience, for HTTP test servers
// that must authenticate the agent like the real gateway: it passes only a
// token VerifyJWT accepts. ctx is accepted for the caller's interface; the
// check does no I/O.
func (s *Server) Verifier(audience string) func(ctx context.Context, token string) error {
	return func(ctx context.Context, token string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		_, err := s.VerifyJWT(token, audience)
		return err
	}
}
