/**
 * The service definitions the adapter servers and clients speak: the
 * generated quickdash.v1 ones, plus the standard health check.
 *
 * grpc.health.v1.Health/Check is the standard health protocol that
 * container and Kubernetes probes speak, hand-encoded (two tiny messages)
 * because no health package is a dependency.
 */
import { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';
import { CatalogServiceService } from '../../protos/gen/quickdash/v1/catalog.ts';
export type { GetReservationRequest, GetReservationResponse } from '../../protos/gen/quickdash/v1/catalog.ts';

/** CatalogService as generated. */
export const CatalogAdapterService = CatalogServiceService;

// ------------------------------------------------------------------ grpc.health.v1

/** grpc.health.v1.HealthCheckResponse.ServingStatus. */
export const ServingStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;

export interface HealthCheckRequest {
  service: string;
}
export interface HealthCheckResponse {
  status: number;
}

function encodeRequest(m: HealthCheckRequest): Buffer {
  const w = new BinaryWriter();
  if (m.service) w.uint32(10).string(m.service);
  return Buffer.from(w.finish());
}

function decodeRequest(b: Buffer): HealthCheckRequest {
  const r = new BinaryReader(b);
  const m: HealthCheckRequest = { service: '' };
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === 2) m.service = r.string();
    else r.skip(wire);
  }
  return m;
}

function encodeResponse(m: HealthCheckResponse): Buffer {
  const w = new BinaryWriter();
  if (m.status) w.uint32(8).int32(m.status);
  return Buffer.from(w.finish());
}

function decodeResponse(b: Buffer): HealthCheckResponse {
  const r = new BinaryReader(b);
  const m: HealthCheckResponse = { status: ServingStatus.UNKNOWN };
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === 0) m.status = r.int32();
    else r.skip(wire);
  }
  return m;
}

export const HealthService = {
  check: {
    path: '/grpc.health.v1.Health/Check',
    requestStream: false,
    responseStream: false,
    requestSerialize: encodeRequest,
    requestDeserialize: decodeRequest,
    responseSerialize: encodeResponse,
    responseDeserialize: decodeResponse,
  },
} as const;
