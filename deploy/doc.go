// Package deploy holds no code: it is the Dockerfiles, the compose stack,
// the Kubernetes manifests and the image build script (deploy/lb is the
// compose stack's load balancer, a command of its own). Its tests decode the
// manifests into the Kubernetes API types, load compose.yaml the way
// Compose does, and run the images as containers (testcontainers-go).
package deploy
