package svidtest

import (
	"context"
	"slices"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// api implements the SpiffeWorkloadAPI gRPC service on top of a Server. The
// WIT-SVID methods stay unimplemented (Unimplemented, as on older agents).
type api struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	s *Server
}

var _ workload.SpiffeWorkloadAPIServer = (*api)(nil)

func (a *api) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	s := a.s
	s.mu.Lock()
	s.counts.FetchJWTSVID++
	ttl := s.jwtTTL
	s.mu.Unlock()

	if len(req.GetAudience()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	ids, err := s.identitiesOf(ctx, "FetchJWTSVID")
	if err != nil {
		return nil, err
	}
	if want := req.GetSpiffeId(); want != "" {
		if !slices.Contains(ids, want) {
			return nil, status.Errorf(codes.PermissionDenied, "no identity issued for %s", want)
		}
		ids = []string{want}
	}
	resp := &workload.JWTSVIDResponse{}
	for _, id := range ids {
		tok, err := s.mintJWT(id, req.GetAudience(), ttl)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: id, Svid: tok})
	}
	return resp, nil
}

func (a *api) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	s := a.s
	s.count(func(c *Counts) { c.FetchJWTBundles++ })
	if _, err := s.identitiesOf(stream.Context(), "FetchJWTBundles"); err != nil {
		return err
	}
	if err := stream.Send(&workload.JWTBundlesResponse{
		Bundles: map[string][]byte{s.td.IDString(): s.JWKS()},
	}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func (a *api) ValidateJWTSVID(_ context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	s := a.s
	s.count(func(c *Counts) { c.ValidateJWTSVID++ })
	switch {
	case req.GetAudience() == "":
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	case req.GetSvid() == "":
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	id, claims, err := s.verifyJWT(req.GetSvid(), req.GetAudience())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	pb, err := structpb.NewStruct(claims)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: id.String(), Claims: pb}, nil
}

func (a *api) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	s := a.s
	s.count(func(c *Counts) { c.FetchX509SVID++ })
	ids, err := s.identitiesOf(stream.Context(), "FetchX509SVID")
	if err != nil {
		return err
	}
	if !slices.Contains(ids, s.x509ID.String()) {
		// This stand-in issues X.509-SVIDs for X509ID only.
		return status.Errorf(codes.PermissionDenied, "no identity issued (X.509-SVIDs are issued for %s only; the caller is registered for %v)", s.x509ID, ids)
	}
	for {
		s.mu.Lock()
		sv, rotated := s.x509, s.x509Rotated
		s.mu.Unlock()
		if err := stream.Send(&workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
			SpiffeId:    s.x509ID.String(),
			X509Svid:    sv.der,
			X509SvidKey: sv.keyDER,
			Bundle:      s.caCert.Raw,
		}}}); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-rotated: // send the new SVID, as SPIRE does on rotation
		}
	}
}

func (a *api) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	s := a.s
	s.count(func(c *Counts) { c.FetchX509Bundles++ })
	if _, err := s.identitiesOf(stream.Context(), "FetchX509Bundles"); err != nil {
		return err
	}
	if err := stream.Send(&workload.X509BundlesResponse{
		Bundles: map[string][]byte{s.td.IDString(): s.caCert.Raw},
	}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}
