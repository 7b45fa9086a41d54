// The <script> build: `new InteractionLogger({...})` from a plain page.
import { InteractionLogger } from './logger.js';

(globalThis as unknown as { InteractionLogger: typeof InteractionLogger }).InteractionLogger = InteractionLogger;
