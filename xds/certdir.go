package xds

// The files of a proxyless gRPC application's certificate directory. Its
// bootstrap names them to gRPC's file_watcher certificate provider (the
// instance CertProviderInstance), and `gitmesh certs` writes them from the
// node's secrets SecretIdentity and SecretMeshCA.
const (
	CertFileName = "cert.pem" // the identity's certificate chain, leaf first
	KeyFileName  = "key.pem"  // the identity's private key, mode 0600
	CAFileName   = "ca.pem"   // the mesh CA, to check peers against
)
