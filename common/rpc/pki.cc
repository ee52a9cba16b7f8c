#include "common/rpc/pki.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/status.h"

namespace gka::rpc {
namespace {

// RAII for the OpenSSL handles used here.
struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct ExtensionFree {
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct BnFree {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using ExtensionPtr = std::unique_ptr<X509_EXTENSION, ExtensionFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

// The OpenSSL error queue as text (and cleared), for INTERNAL statuses.
absl::Status OpenSslError(absl::string_view what) {
  std::string detail;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    absl::StrAppend(&detail, detail.empty() ? "" : "; ", buf);
  }
  return absl::InternalError(
      absl::StrCat("OpenSSL: ", what, " failed", detail.empty() ? "" : ": ", detail));
}

absl::StatusOr<PkeyPtr> NewP256Key() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (key == nullptr) return OpenSslError("generating a P-256 key");
  return key;
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (ext == nullptr || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpenSslError(absl::StrCat("the extension ", OBJ_nid2sn(nid), "=", value));
  }
  return absl::OkStatus();
}

// A certificate for `key` named `common_name`, signed by `issuer_key` (`issuer` null: self-
// signed, the CA). `extensions`: (nid, value) in OpenSSL's config syntax.
absl::StatusOr<X509Ptr> MakeCertificate(const std::string& common_name, EVP_PKEY* key,
                                        X509* issuer, EVP_PKEY* issuer_key,
                                        const std::vector<std::pair<int, std::string>>& extensions,
                                        absl::Duration validity) {
  X509Ptr cert(X509_new());
  if (cert == nullptr) return OpenSslError("X509_new");
  // Version 3 (0-based), a random positive 127-bit serial (RFC 5280: unique per CA).
  unsigned char serial[16];
  if (X509_set_version(cert.get(), 2) != 1 || RAND_bytes(serial, sizeof(serial)) != 1) {
    return OpenSslError("the certificate's version and serial");
  }
  serial[0] &= 0x7f;
  BnPtr bn(BN_bin2bn(serial, sizeof(serial), nullptr));
  if (bn == nullptr || BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return OpenSslError("the certificate's serial");
  }
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), absl::ToInt64Seconds(validity)) == nullptr) {
    return OpenSslError("the certificate's validity");
  }
  X509_NAME* name = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.c_str()), -1,
                                 -1, 0) != 1 ||
      X509_set_issuer_name(cert.get(), issuer == nullptr ? name
                                                         : X509_get_subject_name(issuer)) != 1 ||
      X509_set_pubkey(cert.get(), key) != 1) {
    return OpenSslError("the certificate's names and key");
  }
  X509* signer = issuer == nullptr ? cert.get() : issuer;
  for (const auto& [nid, value] : extensions) {
    GKA_RETURN_IF_ERROR(AddExtension(cert.get(), signer, nid, value));
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) {
    return OpenSslError("signing the certificate");
  }
  return cert;
}

// Writes `pem` to `path` with `mode`, replacing the file.
absl::Status WriteFile(const std::string& path, const std::string& pem, mode_t mode) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  // open() keeps an existing file's mode; a key must not stay readable by others.
  fchmod(fd, mode);
  size_t done = 0;
  while (done < pem.size()) {
    const ssize_t n = write(fd, pem.data() + done, pem.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(fd);
      return absl::InternalError(absl::StrCat("writing ", path, ": ", std::strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  return absl::OkStatus();
}

absl::StatusOr<std::string> CertificatePem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return OpenSslError("PEM-encoding a certificate");
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, n);
}

absl::StatusOr<std::string> PrivateKeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return OpenSslError("PEM-encoding a private key");
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, n);
}

bool PlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name != "ca" &&
         !absl::StrContains(name, '/');
}

}  // namespace

absl::StatusOr<Pki> WriteThrowawayPki(const PkiOptions& options) {
  if (options.names.empty()) {
    return absl::InvalidArgumentError("a throwaway PKI needs at least one certificate name");
  }
  for (const std::string& name : options.names) {
    if (!PlainFileName(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "certificate name '", name, "' is not a plain file name (nor may it be 'ca')"));
    }
  }
  std::vector<std::string> sans;
  for (const std::string& dns : options.dns_names) sans.push_back(absl::StrCat("DNS:", dns));
  for (const std::string& ip : options.ip_addresses) {
    unsigned char buf[sizeof(in6_addr)];
    if (inet_pton(AF_INET, ip.c_str(), buf) != 1 && inet_pton(AF_INET6, ip.c_str(), buf) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("'", ip, "' is not an IP address"));
    }
    sans.push_back(absl::StrCat("IP:", ip));
  }
  if (options.validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("the certificates' validity must be positive");
  }
  if (mkdir(options.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", options.dir, ": ", std::strerror(errno)));
  }
  Pki pki{.dir = options.dir, .ca_path = absl::StrCat(options.dir, "/ca.pem")};

  GKA_ASSIGN_OR_RETURN(PkeyPtr ca_key, NewP256Key());
  GKA_ASSIGN_OR_RETURN(
      X509Ptr ca,
      MakeCertificate(options.ca_name, ca_key.get(), nullptr, ca_key.get(),
                      {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                       {NID_key_usage, "critical,keyCertSign,cRLSign"},
                       {NID_subject_key_identifier, "hash"}},
                      options.validity));
  GKA_ASSIGN_OR_RETURN(std::string ca_pem, CertificatePem(ca.get()));
  GKA_RETURN_IF_ERROR(WriteFile(pki.ca_path, ca_pem, 0644));

  const std::string san = absl::StrJoin(sans, ",");
  for (const std::string& name : options.names) {
    GKA_ASSIGN_OR_RETURN(PkeyPtr key, NewP256Key());
    std::vector<std::pair<int, std::string>> extensions = {
        {NID_basic_constraints, "critical,CA:FALSE"},
        {NID_key_usage, "critical,digitalSignature"},
        {NID_ext_key_usage, "serverAuth,clientAuth"},
        {NID_subject_key_identifier, "hash"},
        {NID_authority_key_identifier, "keyid:always"}};
    if (!san.empty()) extensions.emplace_back(NID_subject_alt_name, san);
    GKA_ASSIGN_OR_RETURN(X509Ptr cert, MakeCertificate(name, key.get(), ca.get(), ca_key.get(),
                                                       extensions, options.validity));
    const TlsFiles files = pki.Files(name);
    GKA_ASSIGN_OR_RETURN(std::string cert_pem, CertificatePem(cert.get()));
    GKA_ASSIGN_OR_RETURN(std::string key_pem, PrivateKeyPem(key.get()));
    GKA_RETURN_IF_ERROR(WriteFile(files.cert, cert_pem, 0644));
    GKA_RETURN_IF_ERROR(WriteFile(files.key, key_pem, 0600));
  }
  return pki;
}

}  // namespace gka::rpc
