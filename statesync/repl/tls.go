package repl

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLSConfigs builds the two sides of an optional TLS replication link:
// this node's certificate and key, the CA both nodes' certificates come
// from, and the peer's name, which its certificate must carry (DNS name).
func TLSConfigs(certFile, keyFile, caFile, peerName string) (server, client *tls.Config, err error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("statesync: tls certificate %s: %w", certFile, err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, fmt.Errorf("statesync: tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("statesync: tls ca %s: no certificate in it", caFile)
	}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS13,
		// The chain is verified by ClientAuth; the name is not, and a
		// node must not be able to pose as its peer with its own
		// certificate.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("statesync: tls: no client certificate")
			}
			if err := cs.PeerCertificates[0].VerifyHostname(peerName); err != nil {
				return fmt.Errorf("statesync: tls: client certificate is not %s's: %w", peerName, err)
			}
			return nil
		}}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: peerName, MinVersion: tls.VersionTLS13}
	return server, client, nil
}
