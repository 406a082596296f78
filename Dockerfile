# syntax=docker/dockerfile:1
#
# ddpm in a container: "ddpm serve" for the api and worker replicas of
# deploy/helm/ddpm (or any other command of the CLI).
#
# Stage 1 builds one static binary (CGO_ENABLED=0: no C toolchain, no CUDA
# headers; the CUDA driver, cuBLAS, cuDNN, OpenBLAS and oneDNN are loaded at
# run time when present). Stage 2 is a small Debian with the CPU libraries
# that make the CPU path fast, running as an unprivileged user.
#
#   docker build -t ddpm .
#   docker run --rm -p 8080:8080 ddpm serve --addr :8080
#
# GPU workers need cuBLAS (and cuDNN) in the image; the NVIDIA container
# runtime mounts the driver (libcuda.so.1) from the host:
#
#   docker build -t ddpm:gpu \
#     --build-arg RUNTIME=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#     --build-arg PACKAGES="ca-certificates libopenblas0" .
#
# A model baked into the image instead of mounted from a volume:
#
#   FROM ddpm
#   COPY --chown=65532:65532 my-model /models/my-model
#   CMD ["serve", "--addr", ":8080", "--model", "/models/my-model"]

ARG GO_VERSION=1.26
ARG RUNTIME=debian:bookworm-slim

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/ddpm ./cmd/ddpm

# The image of data-parallel training under Kubeflow's MPI Operator
# (deploy/mpijob): Open MPI (mpirun, and libmpi.so.40 that ddpm loads at
# run time), and an OpenSSH server that the launcher reaches the workers
# through, run by the unprivileged user mpiuser (uid 1000) on port 2222
# with the keys the operator mounts into ~/.ssh. Build it with
#
#   docker build --target mpi -t ddpm:mpi .
FROM ${RUNTIME} AS mpi
ARG PACKAGES="ca-certificates libopenblas0 libdnnl2"
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${PACKAGES} \
      openmpi-bin openssh-server openssh-client libcap2-bin \
 && setcap CAP_NET_BIND_SERVICE=+eip /usr/sbin/sshd \
 && apt-get purge -y libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/run/sshd \
 && printf '    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    Port 2222\n' >> /etc/ssh/ssh_config \
 && useradd --uid 1000 --create-home mpiuser \
 && printf 'Port 2222\nPidFile /home/mpiuser/sshd.pid\nHostKey /home/mpiuser/.ssh/id_rsa\nStrictModes no\n' > /home/mpiuser/.sshd_config \
 && chown mpiuser:mpiuser /home/mpiuser/.sshd_config
COPY --from=build /out/ddpm /usr/local/bin/ddpm
USER 1000:1000
WORKDIR /home/mpiuser

# The default image: ddpm serve.
FROM ${RUNTIME}
ARG PACKAGES="ca-certificates libopenblas0 libdnnl2"
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${PACKAGES} \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /models /cache \
 && chown 65532:65532 /models /cache
COPY --from=build /out/ddpm /usr/local/bin/ddpm
# A fixed numeric user, so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532
ENV HF_HOME=/cache/huggingface
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ddpm"]
CMD ["serve", "--addr", ":8080"]
