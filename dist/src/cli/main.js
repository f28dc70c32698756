#!/usr/bin/env node
console.log("hi", process.argv.slice(2));
export {};
//# sourceMappingURL=main.js.map