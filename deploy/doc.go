// Package deploy holds no code: it is the Dockerfiles, the compose stack,
// the Kubernetes manifests and the image build script. Its tests decode the
// manifests into the Kubernetes API types, load compose.yaml the way
// Compose does, and run the images as containers (testcontainers-go).
package deploy
