package deploy

import (
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestManifestsMountNothingWritable: the gateway and the worker need no
// writable path. Their containers run with a read-only root filesystem
// and mount only ConfigMaps and Secrets, read-only: no emptyDir, no
// volume claim, no host path (the batch runner once wrote its output
// files to /tmp, and every batch failed in finalizing on these
// manifests; TestBatchWithoutTempDir runs the batch round trip with no
// writable temporary directory). NATS is the one with storage: its /data
// (the Helm chart's JetStream file store claim); the values add it
// nothing but a ConfigMap.
func TestManifestsMountNothingWritable(t *testing.T) {
	m := loadManifests(t)
	if len(m.deployments) != 2 || m.deployments["laas-bridge-gateway"] == nil || m.deployments["laas-bridge-worker"] == nil {
		t.Fatalf("deployments: want laas-bridge-gateway and laas-bridge-worker, got %v", keys(m.deployments))
	}
	for name, d := range m.deployments {
		t.Run(name, func(t *testing.T) {
			pod := d.Spec.Template.Spec
			volumes := map[string]corev1.Volume{}
			for _, v := range pod.Volumes {
				volumes[v.Name] = v
				if !readOnlySource(v.VolumeSource) {
					t.Errorf("volume %s is not a ConfigMap or Secret: %+v; the bridge needs nothing writable", v.Name, v.VolumeSource)
				}
			}
			containers := append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...)
			if len(pod.Containers) == 0 {
				t.Fatal("no containers")
			}
			for _, c := range containers {
				if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
				}
				for _, vm := range c.VolumeMounts {
					v, ok := volumes[vm.Name]
					switch {
					case !ok:
						t.Errorf("container %s mounts %s, which is no volume of the pod", c.Name, vm.Name)
					case !vm.ReadOnly:
						t.Errorf("container %s mounts %s at %s writable; want readOnly: true", c.Name, vm.Name, vm.MountPath)
					case !readOnlySource(v.VolumeSource):
						t.Errorf("container %s mounts %s, not a ConfigMap or Secret", c.Name, vm.Name)
					}
				}
			}
		})
	}
	t.Run("nats", func(t *testing.T) {
		data, err := os.ReadFile("k8s/nats/values.yaml")
		if err != nil {
			t.Fatal(err)
		}
		var values struct {
			Config struct {
				Jetstream struct {
					FileStore struct {
						PVC struct {
							Size string `json:"size"`
						} `json:"pvc"`
					} `json:"fileStore"`
				} `json:"jetstream"`
			} `json:"config"`
			PodTemplate struct {
				Patch []struct {
					Op, Path string
					Value    corev1.Volume
				} `json:"patch"`
			} `json:"podTemplate"`
		}
		if err := yaml.Unmarshal(data, &values); err != nil {
			t.Fatal(err)
		}
		if values.Config.Jetstream.FileStore.PVC.Size == "" {
			t.Error("NATS has no JetStream file store claim (/data)")
		}
		for _, p := range values.PodTemplate.Patch {
			if p.Path == "/spec/volumes/-" && !readOnlySource(p.Value.VolumeSource) {
				t.Errorf("the NATS values add volume %s that is not a ConfigMap or Secret", p.Value.Name)
			}
		}
	})
}

// readOnlySource reports a volume the kubelet mounts read-only content
// into: a ConfigMap, a Secret, or a projection of them.
func readOnlySource(s corev1.VolumeSource) bool {
	switch {
	case s.ConfigMap != nil, s.Secret != nil:
		return true
	case s.Projected != nil:
		for _, p := range s.Projected.Sources {
			if p.ConfigMap == nil && p.Secret == nil {
				return false
			}
		}
		return true
	}
	return false
}
