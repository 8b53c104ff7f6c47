// Internal to kernels/: what the kernel entry points (declared once, in
// kernels/kernels.h, and defined in kernels/*.cu) ask of the current device
// and the process-wide launch settings. No kernel is declared here. The
// queries cache per device and thread; they are safe from any thread.
#ifndef ARBOR_KERNELS_DEVICE_H_
#define ARBOR_KERNELS_DEVICE_H_

#include "kernels/kernels.h"

namespace arbor::kernels {

// What the launchers need to know of the current device (cached per device
// and thread); a failed query leaves the defaults.
struct DeviceCapability {
  int sm_count = 1;
  int major = 0, minor = 0;  // compute capability
};
DeviceCapability CurrentDeviceCapability();

// Number of SMs of the current device (cached per device).
int DeviceSmCount();

// Whether kernels launch as programmatic dependent launches: SetDependentLaunch
// (default on) and the current device can (compute capability 9.0 or newer;
// cached per device).
bool DependentLaunchEnabled();

// How the group-attention kernel that runs for this shape on the current
// device tiles its work.
struct GroupAttentionGeometry {
  int rows_per_cta;  // (token, GQA head) rows
  int ctas_per_sm;   // resident at once
  int tile_keys;     // keys per shared-memory tile
};
GroupAttentionGeometry GroupAttentionGeometryFor(const AttentionShape& shape);

}  // namespace arbor::kernels

#endif  // ARBOR_KERNELS_DEVICE_H_
