/** Runs the shared page-table conformance suite against every registered format configuration. */
import { PT_FORMATS } from "../../src/pt/registry.ts";
import { ptConformanceSuite } from "../conformance/pt.case.ts";

for (const fmt of PT_FORMATS) ptConformanceSuite(fmt);
