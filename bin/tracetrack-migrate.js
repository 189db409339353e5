#!/usr/bin/env node
// Entry of the installed command: TypeScript sources run through tsx (a runtime dependency).
'use strict';
require('tsx/cjs');
require('./cli.ts');
