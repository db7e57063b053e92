package schema

// BucketKeyState is the KV bucket of virtual keys' shared limit state
// (package keys): one value per key token, changed by compare-and-set by
// every gateway and worker.
const BucketKeyState = "LAAS_KEY_STATE"
