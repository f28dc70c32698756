export const x = 1;
//# sourceMappingURL=index.js.map