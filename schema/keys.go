package schema

// BucketKeys is the KV bucket of virtual keys (package keys): one entry per
// key, named by its token (the hex SHA-256 of the secret), holding the
// key's settings as JSON. The secret itself is never stored.
const BucketKeys = "LAAS_KEYS"
