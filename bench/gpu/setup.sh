# Sourced by run.sh and decoding.sh on the GPU machine (repository root, .device/ carried; see prepare.sh): unpacks
# node, dawn.node and the Vulkan/EGL loaders, links node_modules to the carried one, and sets the driver paths.
d=.device
for f in $d/gl/*.deb; do dpkg -x "$f" /; done; ldconfig
xz -dc $d/node.xz > /tmp/node && chmod +x /tmp/node
xz -dc $d/node_modules/webgpu/dist/linux-x64/dawn.node.xz > $d/node_modules/webgpu/dist/linux-x64/dawn.node
rm -rf node_modules && ln -s $d/node_modules node_modules
export XDG_RUNTIME_DIR=/tmp
# the NVIDIA Vulkan driver's manifest lies outside the loader's default folders there
[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
out=${OUT:-bench/results}
