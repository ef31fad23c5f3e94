// The API's types, generated from its OpenAPI document (api.gen.ts, `npm run types`): the
// editor holds no hand-written copy of a node type, graph, problem or workflow.
import type { components } from "./api.gen";

type S = components["schemas"];
export type Palette = S["Palette"];
export type NodeType = S["NodeType"];
export type Port = S["Port"];
export type Family = S["Family"];
export type GraphSpec = S["GraphSpec"];
export type NodeSpec = S["NodeSpec"];
export type EdgeSpec = S["EdgeSpec"];
export type Problem = S["Problem"];
export type ValidationView = S["ValidationView"];
export type ConnectionQuery = S["ConnectionQuery"];
export type ConnectionOptions = S["ConnectionOptions"];
export type PortRef = S["PortRef"];
export type WorkflowView = S["WorkflowView"];
export type WorkflowVersions = S["WorkflowVersions"];
export type ErrorBody = S["ErrorBody"];
