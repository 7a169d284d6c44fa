// Package pki makes the small certificate authority that hapair's optional
// replication TLS needs, for tests and the lab: a CA and one certificate
// per node name.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Write writes into dir a CA (ca.crt) and, for each name, a certificate
// carrying that DNS name signed by it (NAME.crt, NAME.key): what the
// optional TLS on the replication link needs, for tests and the lab.
func Write(dir, caName string, names ...string) error {
	return WriteValid(dir, caName, 24*time.Hour, names...)
}

// WriteValid is Write with certificates that end valid from now: to see
// what a node does about a certificate near its end, or past it (valid
// below zero).
func WriteValid(dir, caName string, valid time.Duration, names ...string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: caName}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	write := func(name, typ string, der []byte) error {
		return os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
	}
	if err := write("ca.crt", "CERTIFICATE", caDER); err != nil {
		return err
	}
	for i, n := range names {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: n}, DNSNames: []string{n},
			NotBefore: time.Now().Add(-time.Hour - max(-valid, 0)), NotAfter: time.Now().Add(valid),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		if err := write(n+".crt", "CERTIFICATE", der); err != nil {
			return err
		}
		if err := write(n+".key", "EC PRIVATE KEY", kb); err != nil {
			return err
		}
	}
	return nil
}
